"""Reading an upstream's binary body (``/audio/speech``'s audio) as a stream of bytes.

The bytes go on as they come, never gathered: :meth:`ByteStream.pause` stops reading
the upstream socket (the client's backpressure reaches the upstream), so a slow
reader keeps the gateway's memory to a socket buffer or two. Until the first bytes
arrive the attempt may still be retried; after them a break is reported to the sink.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from gatewayd.upstream.body_stream import UpstreamBody
from gatewayd.upstream.encoding import Decoder, DecodingError
from gatewayd.upstream.outcomes import (
    FailureKind,
    StreamSink,
    UpstreamFailure,
    openai_error,
)

#: Most bytes one upstream read may decode to (a compression bomb stops here).
MAX_DECODED_READ = 64 * 1024 * 1024
#: Bytes of the body's start kept (a WAV header, an MP3 frame header).
HEAD_BYTES = 64


class ByteStream(UpstreamBody):
    """An upstream body handed on read by read, with flow control and an idle timeout.

    ``first_bytes`` fires (with None) when the first body bytes arrive, or fails with an
    :class:`UpstreamFailure` when the body ends (or breaks) before any."""

    def __init__(
        self,
        clock: IReactorTime,
        idle_timeout: float,
        deployment: str = "",
        decoder: Decoder | None = None,
        empty_ok: bool = False,
    ) -> None:
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._deployment = deployment
        self._decoder = decoder
        #: An empty body is an answer (an empty file), not a broken upstream.
        self._empty_ok = empty_ok
        self._pending: list[bytes] = []
        self._sink: StreamSink | None = None
        self._ended = False
        self._end_failure: UpstreamFailure | None = None
        self._failure: UpstreamFailure | None = None
        self._idle_call: Any = None
        self._paused = False
        #: Bytes handed on so far, and the first of them (an audio header: the length of
        #: speech for ``output_cost_per_second``).
        self.received = 0
        self.head = b""
        self.first_bytes: Deferred[None] = Deferred(lambda _: self.cancel())

    # -- protocol side ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._failure is not None:
            return
        if self._decoder is not None:
            try:
                data = self._decoder.decode(data, MAX_DECODED_READ)
            except DecodingError as e:
                self._failure = UpstreamFailure(
                    FailureKind.BAD_RESPONSE,
                    502,
                    openai_error(str(e), "api_error", "bad_upstream_response"),
                    deployment=self._deployment,
                )
                self.cancel()
                return
        if not data:
            return
        self.received += len(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]
        if self._sink is not None:
            self._sink.event(data)
        else:
            self._pending.append(data)
        if not self.first_bytes.called:
            self.first_bytes.callback(None)
        self._arm_idle()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        self._disarm_idle()
        failure: UpstreamFailure | None = self._failure
        if failure is None and not isinstance(reason.value, ResponseDone | PotentialDataLoss):
            if not isinstance(reason.value, CancelledError):
                failure = UpstreamFailure(
                    FailureKind.CONNECT,
                    502,
                    openai_error(
                        "upstream body broke off before it was complete",
                        "api_connection_error",
                        "upstream_stream_broken",
                    ),
                    deployment=self._deployment,
                )
        if not self.first_bytes.called and failure is None and self._empty_ok:
            self._ended = True
            self.first_bytes.callback(None)
            return
        if not self.first_bytes.called:
            self.first_bytes.errback(
                failure
                or UpstreamFailure(
                    FailureKind.BAD_RESPONSE,
                    502,
                    openai_error("upstream answered with an empty body"),
                    deployment=self._deployment,
                )
            )
            return
        self._ended = True
        self._end_failure = failure
        if self._sink is not None:
            self._sink.end(failure)

    # -- idle timeout ----------------------------------------------------------

    def _arm_idle(self) -> None:
        if self._paused or self._ended:
            return
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self._idle_timeout)
        else:
            self._idle_call = self._clock.callLater(self._idle_timeout, self._idle)

    def _idle(self) -> None:
        self._idle_call = None
        self._failure = self._idle_timeout_failure("body")
        self.cancel()
