"""The upstream client through Twisted's ``Agent`` (``twisted.web.client``).

Kept for A/B measurement against the lean client (``GATEWAYD_UPSTREAM_CLIENT=agent``,
see docs/performance.md): the same pooling, retries and interface.
"""

from __future__ import annotations

import weakref
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web._newclient import _ensureValidURI
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
    _HTTP11ClientFactory,
    _RetryingHTTP11ClientProtocol,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from gatewayd.config.tls import TLSSettings, tls_creator
from gatewayd.upstream.body import BytesProducer
from gatewayd.upstream.endpoints import FastFailoverEndpoint


def origin_endpoint(
    reactor: Any, scheme: bytes, host: bytes, port: int, tls: TLSSettings
) -> IStreamClientEndpoint:
    """The endpoint for one upstream origin: TCP with fast failover, TLS for https.

    Raises SchemeNotSupported, or OSError/ValueError for unreadable TLS files."""
    if scheme not in (b"http", b"https"):
        raise SchemeNotSupported(f"unsupported scheme {scheme!r}")
    endpoint: IStreamClientEndpoint = FastFailoverEndpoint(reactor, host.decode("ascii"), port)
    if scheme == b"https":
        endpoint = wrapClientTLS(tls_creator(tls, host), endpoint)
    return endpoint


class _ReplayingRetry(_RetryingHTTP11ClientProtocol):
    """Twisted retries a request that died on a reused (pooled) connection before any
    response, but only for body-less idempotent methods. Our bodies are bytes in memory
    that can be sent again, and a connection the upstream closed while idle (keep-alive
    timeouts of 5 s are common) never saw the request: retry those POSTs once too."""

    def _shouldRetry(self, method: bytes, exception: Exception, bodyProducer: Any) -> bool:
        if isinstance(bodyProducer, BytesProducer):
            method, bodyProducer = b"GET", None
        return bool(super()._shouldRetry(method, exception, bodyProducer))  # type: ignore[no-untyped-call]


class QuietPool(HTTPConnectionPool):
    """A pool whose connection factories do not log every start and stop, and whose
    reused connections retry a request the upstream never answered (see above)."""

    class _factory(_HTTP11ClientFactory):
        noisy = False

    def __init__(self, reactor: Any, persistent: bool = True) -> None:
        super().__init__(reactor, persistent)  # type: ignore[no-untyped-call]
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()

    def getConnection(self, key: Any, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        d: Deferred[Any] = super().getConnection(key, endpoint)

        def replaying(connection: Any) -> Any:
            if isinstance(connection, _RetryingHTTP11ClientProtocol):
                return _ReplayingRetry(connection._clientProtocol, connection._newConnection)  # type: ignore[no-untyped-call]
            return connection

        return d.addCallback(replaying)

    def _newConnection(self, key: Any, endpoint: IStreamClientEndpoint) -> Deferred[Any]:
        d: Deferred[Any] = super()._newConnection(key, endpoint)
        return d.addCallback(self._track)

    def _track(self, connection: Any) -> Any:
        self._opened.add(connection)  # weak: a closed connection leaves by itself
        return connection

    def connection_counts(self) -> tuple[int, int]:
        """(in use, idle): read-only, for metrics. Every connection starts in
        ``_newConnection``; one in the pool's idle lists is QUIESCENT."""
        idle = sum(len(c) for c in self._connections.values())
        busy = sum(1 for c in list(self._opened) if c.state not in ("QUIESCENT", "CONNECTION_LOST"))
        return busy, idle


@implementer(IAgentEndpointFactory)
class _CachedEndpoints:
    """One endpoint per upstream origin, built once: the Agent otherwise builds (and
    IDNA-encodes the host for) a new endpoint on every request."""

    def __init__(self, reactor: Any, tls: TLSSettings) -> None:
        self._reactor = reactor
        self._tls = tls
        self._cache: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            endpoint = origin_endpoint(self._reactor, uri.scheme, uri.host, uri.port, self._tls)
            self._cache[key] = endpoint
        return endpoint


class _ParsedURIAgent(Agent):
    """An :class:`Agent` that parses each upstream URL once: ``Agent.request`` runs it
    through ``urllib.parse`` (and back, for the request line) on every request, a few
    per cent of a request's CPU; a deployment sends to the same URL every time."""

    #: URLs remembered per agent (an agent serves one origin: a few deployments' URLs).
    MAX_URLS = 256

    _parsed: dict[bytes, tuple[tuple[bytes, bytes, int], Any, URI, bytes]]

    def _init(self, *args: Any) -> None:
        # Where Agent.__init__ and Agent.usingEndpointFactory both initialise.
        super()._init(*args)  # type: ignore[no-untyped-call]
        self._parsed = {}

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        hit = self._parsed.get(uri)
        if hit is None:
            parsed = URI.fromBytes(_ensureValidURI(uri.strip()))
            try:
                endpoint = self._getEndpoint(parsed)  # type: ignore[no-untyped-call]
            except SchemeNotSupported:
                return fail(Failure())
            if len(self._parsed) >= self.MAX_URLS:
                self._parsed.clear()
            key = (parsed.scheme, parsed.host, parsed.port)
            hit = self._parsed[uri] = (key, endpoint, parsed, parsed.originForm)
        key, endpoint, parsed, path = hit
        result: Deferred[IResponse] = self._requestWithEndpoint(
            key, endpoint, method, parsed, headers, bodyProducer, path
        )
        return result


def pooled_agent(
    reactor: Any, tls: TLSSettings, max_idle: int, idle_timeout: int
) -> tuple[Agent, QuietPool]:
    """An Agent over its own pool, for one origin and TLS settings."""
    pool = QuietPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_idle
    pool.cachedConnectionTimeout = idle_timeout
    pool.retryAutomatically = True  # only ever retries idempotent, body-less requests
    endpoints = _CachedEndpoints(reactor, tls)
    agent = _ParsedURIAgent.usingEndpointFactory(reactor, endpoints, pool)  # type: ignore[no-untyped-call]
    return agent, pool
