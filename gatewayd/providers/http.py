"""HTTP plumbing shared by every networked provider.

One :class:`HTTPConnectionPool` per upstream origin and TLS settings, kept across
reloads; bodies read through our own protocols so that they can be bounded,
decoded, cancelled and, for streams, paused (``treq.collect`` cannot pause).
"""

from __future__ import annotations

import weakref
from typing import Any
from urllib.parse import urlsplit

from OpenSSL import SSL
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IConsumer, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web._newclient import _ensureValidURI
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
    ResponseDone,
    _HTTP11ClientFactory,
    _RetryingHTTP11ClientProtocol,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from gatewayd.providers.base import FailureKind, UpstreamFailure, openai_error
from gatewayd.providers.encoding import Decoder, DecodingError
from gatewayd.providers.endpoints import FastFailoverEndpoint, TLSSettings, tls_creator

#: Connections kept open per upstream: treq's default of 2 would serialise a busy gateway.
MAX_PERSISTENT_PER_HOST = 128
#: Idle pooled connections are closed after this long.
CACHED_CONNECTION_TIMEOUT = 120
DEFAULT_TLS = TLSSettings()


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL (never its credentials): its pool's key."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class _ReplayingRetry(_RetryingHTTP11ClientProtocol):
    """Twisted retries a request that died on a reused (pooled) connection before any
    response, but only for body-less idempotent methods. Our bodies are bytes in memory
    that can be sent again, and a connection the upstream closed while idle (keep-alive
    timeouts of 5 s are common) never saw the request: retry those POSTs once too."""

    def _shouldRetry(self, method: bytes, exception: Exception, bodyProducer: Any) -> bool:
        if isinstance(bodyProducer, BytesProducer):
            method, bodyProducer = b"GET", None
        return bool(super()._shouldRetry(method, exception, bodyProducer))  # type: ignore[no-untyped-call]


class _QuietPool(HTTPConnectionPool):
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
            if uri.scheme not in (b"http", b"https"):
                raise SchemeNotSupported(f"unsupported scheme {uri.scheme!r}")
            host = uri.host.decode("ascii")
            endpoint = FastFailoverEndpoint(self._reactor, host, uri.port)
            if uri.scheme == b"https":
                endpoint = wrapClientTLS(tls_creator(self._tls, uri.host), endpoint)
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


class UpstreamAgents:
    """An :class:`Agent` with its own connection pool for each upstream origin and
    TLS settings (two deployments of one origin with different certificates never
    share a connection).

    Owned by the service so that a reload keeps pooled connections to upstreams
    that stay in the config. Agents follow no redirects and keep no cookies.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._agents: dict[tuple[str, TLSSettings], tuple[Agent, _QuietPool]] = {}

    def agent_for(self, url: str, tls: TLSSettings = DEFAULT_TLS) -> IAgent:
        key = (origin_of(url), tls)
        if key not in self._agents:
            pool = _QuietPool(self._reactor, persistent=True)
            pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
            pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
            pool.retryAutomatically = True  # only ever retries idempotent, body-less requests
            endpoints = _CachedEndpoints(self._reactor, tls)
            agent = _ParsedURIAgent.usingEndpointFactory(self._reactor, endpoints, pool)  # type: ignore[no-untyped-call]
            self._agents[key] = (agent, pool)
        return self._agents[key][0]

    def pool_stats(self) -> list[tuple[str, int, int]]:
        """``(origin, connections in use, idle connections)`` per upstream origin."""
        out: dict[str, tuple[int, int]] = {}
        for (origin, _), (_, pool) in self._agents.items():
            busy, idle = pool.connection_counts()
            was = out.get(origin, (0, 0))
            out[origin] = (was[0] + busy, was[1] + idle)
        return [(origin, busy, idle) for origin, (busy, idle) in out.items()]

    def retain_only(self, urls: list[str]) -> None:
        """Close the pools of origins no longer used (after a reload)."""
        keep = {origin_of(u) for u in urls}
        for key in list(self._agents):
            if key[0] not in keep:
                _, pool = self._agents.pop(key)
                pool.closeCachedConnections()

    def close(self) -> Deferred[Any]:
        ds = [pool.closeCachedConnections() for _, pool in self._agents.values()]
        self._agents.clear()
        return gatherResults(ds)


@implementer(IBodyProducer)
class BytesProducer:
    """A request body that is already in memory: written in one go."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BodyCollector(Protocol):
    """Collects a response body up to ``limit`` bytes (after decoding, with ``decoder``).

    ``done`` fires with the bytes; cancelling it drops the connection.
    """

    def __init__(self, limit: int, decoder: Decoder | None = None) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._decoder = decoder
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def _refuse(self, message: str) -> None:
        self.done.errback(
            UpstreamFailure(
                FailureKind.BAD_RESPONSE,
                502,
                openai_error(message, "api_error", "bad_upstream_response"),
            )
        )
        self._cancel(self.done)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        if self._decoder is not None:
            try:
                data = self._decoder.decode(data, self._limit - self._size)
            except DecodingError as e:
                self._refuse(str(e))
                return
        self._size += len(data)
        if self._size > self._limit:
            self._refuse(f"upstream response larger than {self._limit} bytes")
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)


def _describe(reason: Failure) -> str:
    """A short, secret-free description of a network failure."""
    value = reason.value
    inner = getattr(value, "reasons", None)
    if inner:
        value = inner[0].value
    if isinstance(value, SSL.Error):
        # pyOpenSSL's reasons are (library, function, reason) triples: keep the reasons.
        why = [str(r[-1]) for r in (value.args[0] if value.args else []) if r and r[-1]]
        hint = (
            " (the upstream's certificate is not trusted: see ssl_verify)"
            if any("verify" in w for w in why)
            else ""
        )
        return f"TLS error: {'; '.join(why) or 'handshake failed'}{hint}"
    name = type(value).__name__
    text = str(value).strip()
    return f"{name}: {text}" if text and len(text) < 200 else name
