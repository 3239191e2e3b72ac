"""What a client connection does whichever parser reads it: writes sent at once
(:mod:`gatewayd.sockets.writethrough`), the connection's addresses asked once, refusals answered
in OpenAI's JSON shape; and :class:`TwistedChannel`, Twisted's own parser with those
answers (``GATEWAYD_SERVER_PARSER=twisted``; :mod:`gatewayd.web.channel` is the default)."""

from __future__ import annotations

import contextlib
from typing import Any

from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from gatewayd.observability import request_ids as reqid
from gatewayd.observability.request_ids import request_id
from gatewayd.providers.base import openai_error
from gatewayd.sockets.writethrough import write_through
from gatewayd.web.errors import error_json

#: Lingering close (nginx's ``lingering_close``): after an early answer the connection
#: reads and discards what the client is still sending, for at most this many seconds
#: in all, and at most this many bytes. Closing with unread bytes makes the kernel send
#: a reset, which throws away the answer still in the client's receive buffer.
LINGER_SECONDS = 5.0
LINGER_BYTES = 8 * 1024 * 1024


class AnsweringChannel(HTTPChannel):
    """What both parsers share: writes sent at once (:mod:`gatewayd.sockets.writethrough`), the
    connection's addresses asked once, and refusals answered in OpenAI's JSON shape
    (Twisted answers a bare ``400`` with no headers or body)."""

    _rejected = False
    _lingering: Any = None  # the DelayedCall that ends a lingering close
    _discarded = 0
    _peer: Any = None
    _host: Any = None

    def connectionMade(self) -> None:
        # No Nagle: a stream's frames are small writes a few milliseconds apart, and
        # Nagle held each one back until the client acknowledged the one before (its
        # delayed ACK: tens of milliseconds). nginx sets the same (tcp_nodelay on).
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            with contextlib.suppress(OSError):
                set_no_delay(True)
        super().connectionMade()  # type: ignore[no-untyped-call]

    # Each request asks (Twisted's Request.__init__): the transport builds a new address
    # object per call; a connection's ends do not change.
    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = self.transport.getPeer()  # type: ignore[union-attr]
        return self._peer

    def getHost(self) -> Any:
        if self._host is None:
            self._host = self.transport.getHost()  # type: ignore[union-attr]
        return self._host

    # -- writing: at once when nothing is queued (gatewayd.sockets.writethrough) -----------

    _corked: list[bytes] | None = None

    def cork(self) -> None:
        """Hold what is written until :meth:`uncork`, to send it as one."""
        self._corked = []

    def uncork(self) -> None:
        parts, self._corked = self._corked, None
        if parts:
            write_through(self.transport, b"".join(parts))

    def _send(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        else:
            write_through(self.transport, data)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)  # type: ignore[no-untyped-call]
            return
        parts = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                parts.extend((name, b": ", value, b"\r\n"))
        parts.append(b"\r\n")
        self._send(b"".join(parts))

    def write(self, data: bytes) -> None:
        self._send(data)

    def writeSequence(self, iovec: Any) -> None:
        self._send(b"".join(iovec))

    # -- refusals -------------------------------------------------------------------

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.reject(400, "malformed HTTP request", "bad_request")

    def reject(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` with an OpenAI-shaped error for the newest request, log it,
        and close the connection."""
        if self._rejected or self.transport is None:
            return
        self._rejected = True
        body = error_json(openai_error(message, "invalid_request_error", code))
        reason = RESPONSES.get(status, b"Error")
        request = self.requests[-1] if self.requests else None
        rid = request_id(request.getHeader(reqid.HEADER) if request is not None else None)
        if request is not None and hasattr(request, "request_id"):
            request.request_id = rid
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"x-request-id: %s\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(body), rid.encode("ascii"), body)
        )
        access_line = getattr(getattr(self, "site", None), "access_line", None)
        if request is not None and hasattr(request, "outcome") and access_line is not None:
            if request.method == Request.method:  # not parsed yet: what the channel saw
                request.method = getattr(self, "_command", b"-")
                request.uri = getattr(self, "_path", b"-")
            request.outcome = "rejected"
            access_line(request, status, len(body))
        self._linger()

    # -- lingering close ------------------------------------------------------------

    def _linger(self) -> None:
        """Close after an early answer the way nginx's ``lingering_close`` does: send
        the answer, shut down the write side, read and discard what the client still
        sends (a body in flight) until it closes, or for a bounded time and size."""
        transport: Any = self.transport
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is None:  # a transport that cannot half-close (a test's)
            self.loseConnection()  # type: ignore[no-untyped-call]
            return
        transport.unregisterProducer()  # as HTTPChannel.loseConnection
        self.setTimeout(None)  # type: ignore[no-untyped-call]  # the linger's own bound
        resume = getattr(transport, "resumeProducing", None)
        if resume is not None:
            resume()  # reading may have been paused behind an earlier request
        half_close()  # the answer leaves, then a FIN: the client reads it before any reset
        clock: Any = getattr(getattr(self, "factory", None), "reactor", None)
        if clock is None:
            from twisted.internet import reactor as clock
        self._lingering = clock.callLater(LINGER_SECONDS, self._linger_over)

    def discard(self, data: bytes) -> None:
        """Bytes read after an early answer: dropped, and counted against the bound."""
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES:
            self._linger_over()

    def _linger_over(self) -> None:
        call, self._lingering = self._lingering, None
        if call is not None and call.active():
            call.cancel()
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        call, self._lingering = self._lingering, None
        if call is not None and call.active():
            call.cancel()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class TwistedChannel(AnsweringChannel):
    """Twisted's HTTP/1.1 parser (``GATEWAYD_SERVER_PARSER=twisted``), with the same
    answers: Twisted would send ``100 Continue`` to any ``Expect`` even when the
    announced body is over the limit."""

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        expect = request.requestHeaders.getRawHeaders(b"expect")
        limit = getattr(request, "max_body_size", None)
        if (
            limit is not None
            and expect
            and expect[0].lower() == b"100-continue"
            and self.length is not None
            and self.length > limit
        ):
            # Refuse before the client uploads the body, instead of inviting it.
            self.reject(413, too_large(limit), "request_too_large")
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def lineLengthExceeded(self, line: bytes) -> None:
        # LineReceiver closes with no answer at all: a line past MAX_LENGTH is a request
        # target too long (the first line) or a header too large, answered as such.
        if getattr(self, "_HTTPChannel__first_line", 1):
            self.reject(414, f"request target longer than {self.MAX_LENGTH} bytes", "uri_too_long")
        else:
            self.reject(
                431, f"request headers larger than {self.MAX_LENGTH} bytes", "headers_too_large"
            )

    # LineReceiver goes on with the rest of a read after a refusal (it stops only for a
    # transport that is closing, and a lingering one is not): what follows is dropped.
    def lineReceived(self, line: bytes) -> None:
        if self._rejected:
            self.discard(line)
        else:
            super().lineReceived(line)  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        if self._rejected:
            self.discard(data)
        else:
            super().rawDataReceived(data)

    def dataReceived(self, data: bytes) -> None:
        if self._rejected:  # a connection lingering after an early answer
            self.discard(data)
        else:
            super().dataReceived(data)  # type: ignore[no-untyped-call]


def too_large(limit: int) -> str:
    """The refusal's message for a body announced over ``limit`` bytes."""
    return f"request body larger than max_request_body_size ({limit} bytes)"
