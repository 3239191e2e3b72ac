"""A lean HTTP/1.1 client connection: one request at a time, answers parsed by httptools.

Twisted's client (``_newclient``) costs a large share of a proxied request's CPU: a
line-based parser, a state machine per request and per response, a Deferred or two
per step. Here a request is one ``transport.write`` and a response is parsed by
llhttp (through ``httptools``) straight into an :class:`IResponse`; the pool of
connections is :mod:`gatewayd.upstream.pool`.

What a body protocol sees is what ``twisted.web.client`` gives it: ``makeConnection``
with a transport that can ``pauseProducing``/``resumeProducing`` (reaching the TCP
socket) and ``stopProducing`` (closing the connection), the body's bytes, then
``connectionLost`` with ``ResponseDone`` (complete), ``PotentialDataLoss`` (a body
delimited by the connection's close) or ``ResponseFailed`` (broken off or malformed).
"""

from __future__ import annotations

import typing
from typing import Any

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from zope.interface import implementer

from gatewayd.sockets.writethrough import write_through


class Exchange(typing.Protocol):
    """What a connection tells the request it carries (:class:`gatewayd.upstream.pool.Exchange`)."""

    def answered(self, response: LeanResponse) -> None: ...

    def failed(self, failure: Failure) -> None: ...

    def lost_before_response(self, failure: Failure) -> None: ...


class LeanAgent(typing.Protocol):
    """What a connection tells its pool (:class:`gatewayd.upstream.pool.LeanAgent`)."""

    def lost(self, conn: LeanConnection) -> None: ...

    def release(self, conn: LeanConnection) -> None: ...

    def retire(self, conn: LeanConnection) -> None: ...


#: Most bytes of status lines and headers (interim responses included) before a body.
MAX_HEAD = 64 * 1024

#: One for every complete body, as Twisted's ``connectionDone``: read, never changed.
_DONE = Failure(ResponseDone())
_VERSIONS = {"1.1": (b"HTTP", 1, 1), "1.0": (b"HTTP", 1, 0)}


class MalformedResponse(Exception):
    """The upstream's bytes are not an HTTP/1.1 response we can read."""


class _Delivered:
    """In place of a finished response's body protocol, once told: let go of."""

    def dataReceived(self, data: bytes) -> None: ...

    def connectionLost(self, reason: Failure) -> None: ...


_DELIVERED = _Delivered()


@implementer(IResponse)
class LeanResponse:
    """An upstream's answer: status, headers, and the body for :meth:`deliverBody`.

    The response is also the body protocol's transport: pausing it pauses reading from
    the upstream's socket; once the response is over it does nothing (the connection
    may already serve another request)."""

    request = None
    previousResponse = None

    def __init__(
        self, conn: LeanConnection, version: str, code: int, phrase: bytes, headers: Headers
    ) -> None:
        self.version = _VERSIONS.get(version, (b"HTTP", 1, 1))
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self._conn: LeanConnection | None = conn
        self._protocol: Any = None
        self._buffer: list[bytes] = []
        self._end: Failure | None = None
        length = headers.getRawHeaders(b"content-length")
        self.length: int | object = UNKNOWN_LENGTH
        if length and length[0].isdigit():
            self.length = int(length[0])

    def deliverBody(self, protocol: Any) -> None:
        """Hand the body to ``protocol`` (what arrived so far at once, then as it comes)."""
        if self._protocol is not None:
            raise RuntimeError("the body of a response is delivered once")
        self._protocol = protocol
        protocol.makeConnection(self)
        if self._buffer:
            for chunk in self._buffer:
                protocol.dataReceived(chunk)
            self._buffer = []
        if self._end is not None:
            protocol.connectionLost(self._end)

    def setPreviousResponse(self, response: IResponse) -> None:
        self.previousResponse = response

    def delimited_by_close(self) -> bool:
        """A body with neither a length nor chunks: it ends when the connection does."""
        return self.length is UNKNOWN_LENGTH and not self.headers.hasHeader(b"transfer-encoding")

    # -- from the connection ---------------------------------------------------

    def _data(self, data: bytes) -> None:
        if self._protocol is not None:
            self._protocol.dataReceived(data)
        else:
            self._buffer.append(data)

    def _finish(self, reason: Failure) -> None:
        self._conn = None
        protocol, self._protocol = self._protocol, _DELIVERED
        if protocol is not None:
            # Let go of the body's protocol (it names this response its transport): no
            # reference cycle is left for the collector.
            protocol.connectionLost(reason)
        else:
            self._protocol = None
            self._end = reason

    # -- the body protocol's transport -------------------------------------------

    def pauseProducing(self) -> None:
        if self._conn is not None:
            self._conn.pause()

    def resumeProducing(self) -> None:
        if self._conn is not None:
            self._conn.resume()

    def stopProducing(self) -> None:
        if self._conn is not None:
            self._conn.close()


class LeanConnection(Protocol):
    """One upstream connection: a request written, its answer parsed, then back to the
    pool (keep-alive, a complete answer, nothing else on the wire) or closed."""

    def __init__(self, agent: LeanAgent) -> None:
        self._agent = agent
        self._parser = HttpResponseParser(self)
        self._exchange: Exchange | None = None
        self._response: LeanResponse | None = None
        self._headers = Headers()
        self._phrase = b""
        self._received = 0  # response bytes for the current request
        self._complete = False  # the final response's last byte was parsed
        #: The body bytes of the read being parsed (llhttp calls on_body per HTTP
        #: chunk: a read of several chunks is handed on once, as one block).
        self._body: list[bytes] = []
        self._keep = False
        self._paused = False
        #: When the connection went back to the pool (seconds, the agent's clock).
        self.idle_since = 0.0
        #: Taken from the pool (not new): a failure before any answer may be a stale close.
        self.reused = False
        self.lost = False
        self._waiters: list[Deferred[None]] = []

    # -- the agent's side --------------------------------------------------------

    def send(self, exchange: Exchange, data: bytes) -> None:
        """Write a whole request; its answer goes to ``exchange``."""
        self._exchange = exchange
        self._received = 0
        self._complete = False
        # Sent now when nothing is queued (no reactor turn to watch for writability).
        write_through(self.transport, data)

    def closed(self) -> Deferred[None]:
        """Fires (with None) once the connection is closed."""
        if self.lost:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        return d

    def close(self) -> None:
        self._keep = False
        if not self.lost:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def abort(self) -> None:
        """Drop the connection at once (a cancelled request)."""
        self._keep = False
        if not self.lost:
            self.transport.abortConnection()  # type: ignore[union-attr]

    def pause(self) -> None:
        if not self._paused and not self.lost:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resume(self) -> None:
        if self._paused and not self.lost:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    # -- the transport's side ----------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._exchange is None:
            # Bytes nobody asked for (on an idle or finished connection): the upstream
            # and we no longer agree on where a response starts.
            self.abort()
            return
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as e:
            self._hand_on()
            # After a complete answer: garbage or a second answer; not reusable either way.
            if not self._complete:
                self._broken(MalformedResponse(f"malformed response from upstream: {e}"))
                return
            self._keep = False
        if self._body:
            self._hand_on()
        if self._complete:
            self._done()
        elif self._response is None and self._received > MAX_HEAD:
            self._broken(MalformedResponse(f"response headers longer than {MAX_HEAD} bytes"))

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        self.lost = True
        # The parser holds this connection's bound callbacks: dropped (nothing is parsed
        # once the connection is gone), neither is left in a reference cycle.
        self.__dict__.pop("_parser", None)
        self._agent.lost(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
        exchange, response = self._exchange, self._response
        self._exchange = self._response = None
        if exchange is None:
            return
        if response is not None:
            if response.delimited_by_close():
                response._finish(Failure(PotentialDataLoss()))
            else:
                response._finish(Failure(ResponseFailed([reason])))
        elif self._received:
            exchange.failed(Failure(ResponseFailed([reason])))
        else:
            exchange.lost_before_response(Failure(ResponseNeverReceived([reason])))

    def _broken(self, error: Exception) -> None:
        exchange, response = self._exchange, self._response
        self._exchange = self._response = None
        self.abort()
        failure = Failure(ResponseFailed([Failure(error)]))
        if response is not None:
            response._finish(failure)
        elif exchange is not None:
            exchange.failed(failure)

    def _done(self) -> None:
        """The final response is complete: pool the connection, then end the body."""
        response = self._response
        self._exchange = self._response = None
        if self._paused:
            self.resume()
        if self._keep and not self.lost:
            self._agent.release(self)
        else:
            self._agent.retire(self)
            self.close()
        if response is not None:
            response._finish(_DONE)

    # -- httptools callbacks -------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._keep = False  # a second answer to one request
        self._headers = Headers()
        self._phrase = b""

    def on_status(self, phrase: bytes) -> None:
        self._phrase += phrase

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.addRawHeader(name, value)

    def on_headers_complete(self) -> None:
        parser = self._parser
        code = parser.get_status_code()
        if code < 200 or self._complete:
            return  # an interim answer (100 Continue, 103 Early Hints): the final one follows
        self._keep = parser.should_keep_alive()
        self._response = response = LeanResponse(
            self, parser.get_http_version(), code, self._phrase, self._headers
        )
        exchange = self._exchange
        if exchange is not None:
            exchange.answered(response)

    def on_body(self, data: bytes) -> None:
        if self._response is not None and not self._complete:
            self._body.append(data)

    def _hand_on(self) -> None:
        """The body bytes of this read, to the response: one block."""
        parts, self._body = self._body, []
        response = self._response
        if parts and response is not None:
            response._data(parts[0] if len(parts) == 1 else b"".join(parts))

    def on_message_complete(self) -> None:
        if self._response is not None:
            self._complete = True
