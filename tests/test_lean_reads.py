"""The lean client hands a read's body on once, however many HTTP chunks it holds
(issue 18: one pass per read through the stream reader, relay and client write)."""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gatewayd.upstream.leanhttp import LeanConnection, LeanResponse


class _Pool:
    def __init__(self) -> None:
        self.released: list[LeanConnection] = []

    def lost(self, conn: LeanConnection) -> None: ...

    def release(self, conn: LeanConnection) -> None:
        self.released.append(conn)

    def retire(self, conn: LeanConnection) -> None: ...


class _Exchange:
    def __init__(self) -> None:
        self.response: LeanResponse | None = None

    def answered(self, response: LeanResponse) -> None:
        self.response = response

    def failed(self, failure: Failure) -> None:
        raise AssertionError(failure)

    def lost_before_response(self, failure: Failure) -> None:
        raise AssertionError(failure)


class _Reads(Protocol):
    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.ended: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.reads.append(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.ended = reason


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_several_chunks_in_one_read_are_one_block_and_one_per_read_stays_one() -> None:
    pool = _Pool()
    conn = LeanConnection(pool)
    conn.makeConnection(StringTransport())  # type: ignore[no-untyped-call]
    exchange = _Exchange()
    conn.send(exchange, b"POST / HTTP/1.1\r\n\r\n")
    events = [b"data: %d\n\n" % i for i in range(5)]
    conn.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(_chunk(e) for e in events[:3])
    )
    assert exchange.response is not None
    body = _Reads()
    exchange.response.deliverBody(body)
    assert body.reads == [b"".join(events[:3])]  # the first read: one block
    conn.dataReceived(_chunk(events[3]))
    conn.dataReceived(_chunk(events[4]) + b"0\r\n\r\n")
    assert body.reads[1:] == [events[3], events[4]]
    assert body.ended is not None and pool.released == [conn]
