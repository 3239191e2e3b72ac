"""HTTP plumbing shared by every networked provider.

One :class:`HTTPConnectionPool` per upstream origin, kept across reloads; bodies
read through our own protocols so that they can be bounded, cancelled and, for
streams, paused (``treq.collect`` cannot pause).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IConsumer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
    _HTTP11ClientFactory,
    _RetryingHTTP11ClientProtocol,
)
from twisted.web.error import SchemeNotSupported
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer
from zope.interface import implementer

from gatewayd.log import get_logger
from gatewayd.providers.base import (
    EventStream,
    FailureKind,
    StreamSink,
    UpstreamFailure,
    openai_error,
)
from gatewayd.providers.sse import SSEFramer, is_done

log = get_logger(__name__)

#: Connections kept open per upstream: treq's default of 2 would serialise a busy gateway.
MAX_PERSISTENT_PER_HOST = 128
#: Idle pooled connections are closed after this long.
CACHED_CONNECTION_TIMEOUT = 120


def origin_of(url: str) -> str:
    """``scheme://host:port`` of a URL: the key of its connection pool."""
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

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._policy = BrowserLikePolicyForHTTPS()
        self._cache: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._cache.get(key)
        if endpoint is None:
            host = uri.host.decode("ascii")
            endpoint = HostnameEndpoint(self._reactor, host, uri.port)
            if uri.scheme == b"https":
                creator = self._policy.creatorForNetloc(uri.host, uri.port)
                endpoint = wrapClientTLS(creator, endpoint)
            elif uri.scheme != b"http":
                raise SchemeNotSupported(f"unsupported scheme {uri.scheme!r}")
            self._cache[key] = endpoint
        return endpoint


class UpstreamAgents:
    """An :class:`Agent` with its own connection pool for each upstream origin.

    Owned by the service so that a reload keeps pooled connections to upstreams
    that stay in the config. Agents follow no redirects and keep no cookies.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._agents: dict[str, tuple[Agent, _QuietPool]] = {}

    def agent_for(self, url: str) -> IAgent:
        key = origin_of(url)
        if key not in self._agents:
            pool = _QuietPool(self._reactor, persistent=True)
            pool.maxPersistentPerHost = MAX_PERSISTENT_PER_HOST
            pool.cachedConnectionTimeout = CACHED_CONNECTION_TIMEOUT
            pool.retryAutomatically = True  # only ever retries idempotent, body-less requests
            agent = Agent.usingEndpointFactory(self._reactor, _CachedEndpoints(self._reactor), pool)
            self._agents[key] = (agent, pool)
        return self._agents[key][0]

    def pool_stats(self) -> list[tuple[str, int, int]]:
        """``(origin, connections in use, idle connections)`` per upstream origin."""
        return [(origin, *pool.connection_counts()) for origin, (_, pool) in self._agents.items()]

    def retain_only(self, urls: list[str]) -> None:
        """Close the pools of origins no longer used (after a reload)."""
        keep = {origin_of(u) for u in urls}
        for key in list(self._agents):
            if key not in keep:
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
    """Collects a response body up to ``limit`` bytes.

    ``done`` fires with the bytes; cancelling it drops the connection.
    """

    def __init__(self, limit: int) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self.done.errback(
                UpstreamFailure(
                    FailureKind.BAD_RESPONSE,
                    502,
                    openai_error(f"upstream response larger than {self._limit} bytes"),
                )
            )
            self._cancel(self.done)
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)


class StreamReader(Protocol, EventStream):
    """Reads an upstream SSE body event by event, with flow control and an idle timeout.

    ``first_bytes`` fires (with None) when the first body bytes arrive: until then
    the attempt may still be retried. After that, :meth:`start` attaches the sink.
    """

    def __init__(
        self,
        clock: IReactorTime,
        idle_timeout: float,
        translate: Callable[[bytes], list[bytes]] | None = None,
        deployment: str = "",
        require_done: bool = False,
    ) -> None:
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._translate = translate
        self._deployment = deployment
        self._framer = SSEFramer()
        # A stream is complete with its [DONE]; without one, only a chunked body's clean
        # end is trusted (a close-delimited body cannot tell a clean close from a cut).
        self._require_done = require_done
        self._done_seen = False
        self._pending: list[bytes] = []
        self._sink: StreamSink | None = None
        self._ended = False
        self._end_failure: UpstreamFailure | None = None
        self._idle_failure: UpstreamFailure | None = None
        self._idle_call: Any = None
        self._paused = False
        self.first_bytes: Deferred[None] = Deferred(lambda _: self.cancel())

    # -- protocol side ---------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        events = self._framer.feed(data)
        if self._translate is not None and events:
            events = [out for e in events for out in self._translate(e)]
        if events:
            if not self._done_seen:
                self._done_seen = any(is_done(e) for e in events)
            if self._sink is not None:
                self._sink.event(b"".join(events))
            else:
                self._pending.extend(events)
        if not self.first_bytes.called:
            self.first_bytes.callback(None)
        self._arm_idle()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        self._disarm_idle()
        failure: UpstreamFailure | None = None
        if self._idle_failure is not None:
            failure = self._idle_failure
        elif not reason.check(ResponseDone, PotentialDataLoss):
            if reason.check(CancelledError):
                failure = None
            else:
                failure = UpstreamFailure(
                    FailureKind.CONNECT,
                    502,
                    openai_error(
                        f"upstream stream broke off before it was complete: {_describe(reason)}",
                        "api_connection_error",
                        "upstream_stream_broken",
                    ),
                    deployment=self._deployment,
                )
        else:
            if self._framer.pending.strip():
                # A clean end with a last event missing its blank line: deliver it anyway.
                tail = self._framer.pending.rstrip(b"\r\n") + b"\n\n"
                self._deliver_tail(tail)
            truncated = self._require_done or reason.check(PotentialDataLoss)
            if truncated and not self._done_seen and self.first_bytes.called:
                failure = UpstreamFailure(
                    FailureKind.CONNECT,
                    502,
                    openai_error(
                        "upstream stream ended without its end-of-stream event ([DONE])",
                        "api_connection_error",
                        "upstream_stream_truncated",
                    ),
                    deployment=self._deployment,
                )
        if not self.first_bytes.called:
            self.first_bytes.errback(
                failure
                or UpstreamFailure(
                    FailureKind.BAD_RESPONSE,
                    502,
                    openai_error("upstream closed the stream without sending anything"),
                    deployment=self._deployment,
                )
            )
            return
        self._ended = True
        self._end_failure = failure
        if self._sink is not None:
            self._sink.end(failure)

    def _deliver_tail(self, tail: bytes) -> None:
        events = self._translate(tail) if self._translate is not None else [tail]
        if not self._done_seen:
            self._done_seen = any(is_done(e) for e in events)
        if self._sink is not None:
            if events:
                self._sink.event(b"".join(events))
        else:
            self._pending.extend(events)

    # -- idle timeout ----------------------------------------------------------

    def _arm_idle(self) -> None:
        if self._paused:
            return
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self._idle_timeout)
        else:
            self._idle_call = self._clock.callLater(self._idle_timeout, self._idle)

    def _disarm_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _idle(self) -> None:
        self._idle_call = None
        self._idle_failure = UpstreamFailure(
            FailureKind.TIMEOUT,
            504,
            openai_error(
                f"upstream sent nothing for {self._idle_timeout:g} s in the middle of a stream",
                "timeout",
                "stream_idle_timeout",
            ),
            deployment=self._deployment,
        )
        self.cancel()

    # -- EventStream -----------------------------------------------------------

    def start(self, sink: StreamSink) -> None:
        self._sink = sink
        if self._pending:
            sink.event(b"".join(self._pending))
            self._pending = []
        if self._ended:
            sink.end(self._end_failure)

    def pause(self) -> None:
        self._paused = True
        self._disarm_idle()  # a slow client is not an idle upstream
        if self.transport is not None and not self._ended:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self._ended:
            self.transport.resumeProducing()  # type: ignore[attr-defined]
            self._arm_idle()

    def cancel(self) -> None:
        if self.transport is not None and not self._ended:
            self.transport.stopProducing()  # type: ignore[attr-defined]


def _describe(reason: Failure) -> str:
    """A short, secret-free description of a network failure."""
    value = reason.value
    inner = getattr(value, "reasons", None)
    if inner:
        value = inner[0].value
    name = type(value).__name__
    text = str(value).strip()
    return f"{name}: {text}" if text and len(text) < 200 else name
