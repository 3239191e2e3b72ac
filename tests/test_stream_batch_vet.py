"""A read holding several SSE events is vetted as a whole only when nothing in it needs
vetting: a secret, an error or a NaN in any one event is still handled event by event."""

from __future__ import annotations

from twisted.internet.task import Clock

from gatewayd.providers.base import UpstreamFailure
from gatewayd.upstream.redact import Redactor
from gatewayd.upstream.stream import StreamReader


class _Sink:
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.ended: list[UpstreamFailure | None] = []

    def event(self, data: bytes) -> None:
        self.data.append(data)

    def end(self, failure: UpstreamFailure | None) -> None:
        self.ended.append(failure)


def _read(payload: bytes) -> tuple[bytes, list[UpstreamFailure | None]]:
    reader = StreamReader(Clock(), 30.0, redactor=Redactor(["sk-upstream-secret"]))
    sink = _Sink()
    reader.start(sink)
    reader.dataReceived(payload)
    return b"".join(sink.data), sink.ended


def test_plain_events_in_one_read_pass_unchanged() -> None:
    events = b'data: {"a":1}\n\n\n\ndata: {"b":2}\n\ndata: [DONE]\n\n'
    out, ended = _read(events)
    assert out == b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: [DONE]\n\n' and ended == []


def test_a_secret_in_one_of_several_events_is_scrubbed() -> None:
    out, _ = _read(b'data: {"a":1}\n\ndata: {"echo":"sk-upstream-secret"}\n\n')
    assert b"sk-upstream-secret" not in out
    assert out == b'data: {"a":1}\n\ndata: {"echo":"***"}\n\n'


def test_an_error_in_one_of_several_events_is_normalised() -> None:
    out, _ = _read(b'data: {"a":1}\n\ndata: {"error":"overloaded"}\n\n')
    assert out.startswith(b'data: {"a":1}\n\ndata: ')
    assert b'"message":"overloaded"' in out and b'"type":"api_error"' in out


def test_nan_in_one_of_several_events_breaks_the_stream() -> None:
    out, _ = _read(b'data: {"a":1}\n\ndata: {"b":NaN}\n\n')
    assert out == b""  # the read is refused whole: nothing of it reaches the client
