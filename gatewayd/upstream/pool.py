"""The lean client's agent: keep-alive connections to one upstream origin, pooled.

An :class:`IAgent` for one origin and TLS settings over
:class:`gatewayd.upstream.leanhttp.LeanConnection`: idle connections are reused most
recent first (the least likely to have been closed by the upstream's own keep-alive
timeout), at most ``max_idle`` are kept, and each is closed after ``idle_timeout``
seconds unused (one timer for the pool, not one per request). A request that fails on a
reused connection before any byte of an answer is sent again once on a new connection:
the upstream closed that connection while it was idle and never saw the request.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from gatewayd.config.tls import TLSSettings
from gatewayd.upstream.body import BytesProducer
from gatewayd.upstream.leanhttp import LeanConnection, LeanResponse
from gatewayd.upstream.twisted_agent import origin_endpoint

#: URLs remembered per agent (an agent serves one origin: a few deployments' URLs).
MAX_URLS = 256


class Exchange:
    """One request: its bytes, the Deferred the caller holds, where it is."""

    __slots__ = ("_agent", "_conn", "_connecting", "_data", "_retried", "deferred")

    def __init__(self, agent: LeanAgent, data: bytes) -> None:
        self._agent = agent
        self._data = data
        self._connecting: Deferred[Any] | None = None
        self._conn: LeanConnection | None = None
        self._retried = False
        self.deferred: Deferred[IResponse] = Deferred(self._cancel)

    def start(self, conn: LeanConnection) -> None:
        self._conn = conn
        self._agent.busy.add(conn)
        conn.send(self, self._data)

    def connect(self) -> None:
        self._conn = None
        d = self._agent.connect()
        self._connecting = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, conn: LeanConnection) -> None:
        self._connecting = None
        self.start(conn)

    def _connect_failed(self, failure: Failure) -> None:
        self._connecting = None
        if not self.deferred.called:
            self.deferred.errback(failure)

    def _cancel(self, _: Deferred[IResponse]) -> None:
        # Before the answer: while connecting, the endpoint fails its Deferred with
        # ConnectingCancelledError (passed on); on a connection, it is dropped and the
        # caller's Deferred fails with CancelledError.
        if self._connecting is not None:
            self._connecting.cancel()
        elif self._conn is not None:
            self._conn.abort()

    # -- from the connection ---------------------------------------------------

    def answered(self, response: LeanResponse) -> None:
        if not self.deferred.called:
            self.deferred.callback(response)
        else:  # cancelled meanwhile
            response.stopProducing()

    def failed(self, failure: Failure) -> None:
        if not self.deferred.called:
            self.deferred.errback(failure)

    def lost_before_response(self, failure: Failure) -> None:
        """The connection closed before any byte of an answer."""
        if self.deferred.called:
            return
        if self._conn is not None and self._conn.reused and not self._retried:
            self._retried = True
            self.connect()
        else:
            self.deferred.errback(failure)


class _Factory(Factory):
    noisy = False  # no log line per connection

    def __init__(self, agent: LeanAgent) -> None:
        self._agent = agent

    def buildProtocol(self, addr: Any) -> LeanConnection:
        return LeanConnection(self._agent)


@implementer(IAgent)
class LeanAgent:
    """Requests to one upstream origin (``scheme://host:port``) over pooled connections.

    ``request`` fires with an :class:`IResponse` once the answer's headers are in."""

    def __init__(
        self,
        reactor: Any,
        origin: str,
        tls: TLSSettings,
        max_idle: int,
        idle_timeout: float,
    ) -> None:
        self._reactor = reactor
        self._origin = origin
        self._tls = tls
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._endpoint: IStreamClientEndpoint | None = None  # built at the first request
        self._factory = _Factory(self)
        #: Per URL: the request line's start and the Host line (they depend on the URL only).
        self._urls: dict[bytes, tuple[bytes, bytes]] = {}
        self._idle: list[LeanConnection] = []  # most recently used last
        self.busy: set[LeanConnection] = set()
        self._sweep: Any = None

    # -- IAgent ---------------------------------------------------------------

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        known = self._urls.get(uri)
        if known is None:
            try:
                known = self._learn(uri)
            except Exception:
                return fail()
        target, host = known
        lines = [method, b" ", target, host]
        if headers is not None:
            if headers.hasHeader(b"host"):
                lines.pop()  # the caller's own Host
            for name, values in headers.getAllRawHeaders():
                for value in values:
                    lines += (name, b": ", value, b"\r\n")
        if bodyProducer is None:
            lines.append(b"\r\n")
        elif isinstance(bodyProducer, BytesProducer):
            lines += (b"Content-Length: %d\r\n\r\n" % bodyProducer.length, bodyProducer.body)
        else:
            return fail(TypeError("the lean client sends bodies held in memory (BytesProducer)"))
        exchange = Exchange(self, b"".join(lines))
        conn = self._take_idle()
        if conn is not None:
            exchange.start(conn)
        else:
            exchange.connect()
        return exchange.deferred

    def _learn(self, uri: bytes) -> tuple[bytes, bytes]:
        """The request target and Host line of a URL, checked to be of this origin and
        to hold nothing that would end the request line (once per URL, not per request)."""
        if any(c <= 0x20 or c >= 0x7F for c in uri.strip()):
            raise ValueError(f"{uri!r} holds a character not allowed in a URL")
        parts = urlsplit(uri.decode("ascii").strip())
        if f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}" != self._origin:
            raise ValueError(f"{uri!r} is not a URL of {self._origin}")
        scheme = parts.scheme.encode("ascii")
        host = (parts.hostname or "").encode("ascii")
        default = 443 if scheme == b"https" else 80
        port = parts.port or default
        if self._endpoint is None:
            self._endpoint = origin_endpoint(self._reactor, scheme, host, port, self._tls)
        if b":" in host:
            host = b"[" + host + b"]"  # an IPv6 literal
        host_value = host if port == default else b"%s:%d" % (host, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if len(self._urls) >= MAX_URLS:
            self._urls.clear()
        known = self._urls[uri] = (
            target.encode("ascii") + b" HTTP/1.1\r\n",
            b"Host: " + host_value + b"\r\n",
        )
        return known

    # -- the pool ---------------------------------------------------------------

    def connect(self) -> Deferred[LeanConnection]:
        """A new connection (fires with it once TCP, and TLS if any, are set up)."""
        assert self._endpoint is not None
        try:
            d: Deferred[Any] = self._endpoint.connect(self._factory)
        except Exception:
            return fail()
        return d

    def _take_idle(self) -> LeanConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.lost:
                conn.reused = True
                return conn
        return None

    def release(self, conn: LeanConnection) -> None:
        """A connection that answered in full and may be kept alive."""
        self.busy.discard(conn)
        if len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = self._reactor.seconds()
        self._idle.append(conn)
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self._idle_timeout, self._expire)

    def retire(self, conn: LeanConnection) -> None:
        """A connection that will not serve another request."""
        self.busy.discard(conn)

    def lost(self, conn: LeanConnection) -> None:
        self.busy.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)

    def _expire(self) -> None:
        """Close the connections idle for ``idle_timeout``; look again when the next is due."""
        self._sweep = None
        now = self._reactor.seconds()
        stale = [c for c in self._idle if now - c.idle_since >= self._idle_timeout]
        for conn in stale:
            self._idle.remove(conn)
            conn.close()
        if self._idle:
            due = min(c.idle_since for c in self._idle) + self._idle_timeout
            self._sweep = self._reactor.callLater(max(0.0, due - now), self._expire)

    def connection_counts(self) -> tuple[int, int]:
        """(in use, idle): for metrics."""
        return len(self.busy), len(self._idle)

    def close(self) -> Deferred[None]:
        """Close the idle connections; fires when they are closed (those in use finish
        their request, then close: they find no pool to return to)."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        self._max_idle = 0
        idle, self._idle = self._idle, []
        waiting = [conn.closed() for conn in idle]
        for conn in idle:
            conn.close()
        return gatherResults(waiting).addCallback(lambda _: None)
