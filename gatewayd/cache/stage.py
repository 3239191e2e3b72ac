"""The cache as two stages around the key limits: :class:`CacheLookup` (outermost)
looks the request up, so that the limits stage admits a hit without taking tokens or
budget (``ctx.cached``); :class:`CacheStage` (innermost) answers the hit, or on a miss
routes the request itself, through a :class:`~gatewayd.cache.flight.Flight` that
identical requests arriving meanwhile join, and returns the answer as its early one.
A flight stores each complete answer.

Cached at the routing level: the key is the request in the client's dialect as it is
routed, the stored answer is the upstream's (chat, or the client's dialect from a
native upstream), and the client's dialect is worded from it by the same translation
as a routed answer (see docs/cache.md for why).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gatewayd.cache.assemble import json_of_stream, stream_of_json
from gatewayd.cache.controls import NONE, Controls, parse_controls
from gatewayd.cache.entry import CachedAnswer
from gatewayd.cache.flight import Flight
from gatewayd.cache.key import cache_key
from gatewayd.cache.replay import ReplayStream
from gatewayd.cache.stores import AnswerStores
from gatewayd.config.cache import CacheSettings
from gatewayd.providers.base import UpstreamResponse
from gatewayd.routing import RouteResult
from gatewayd.stages.base import Before, RouteContext
from gatewayd.stages.route import route_alias

X_GATEWAYD_CACHE = b"x-gatewayd-cache"
#: A slow reader of a shared stream may fall this far behind before it is cut off.
BACKLOG_BYTES = 4 * 1024 * 1024
#: The largest stream recorded for storing (past it, it is relayed, not stored).
RECORD_LIMIT = 16 * 1024 * 1024


def served(entry: CachedAnswer, stream: bool, alias: str) -> RouteResult | None:
    """``entry`` as a RouteResult in the shape asked for (a stream or JSON); None when
    it cannot be (a native Messages/Responses JSON answer asked for as a stream)."""
    if stream:
        events = entry.events
        if events is None and entry.body is not None:
            events = stream_of_json(entry.dialect, entry.body)
        if events is None:
            return None
        response = UpstreamResponse(
            entry.status, entry.headers, None, ReplayStream(events), entry.usage, entry.dialect
        )
    else:
        body = entry.body
        if body is None and entry.events is not None:
            body = json_of_stream(entry.dialect, entry.events)
        if body is None:
            return None
        response = UpstreamResponse(
            entry.status, entry.headers, body, None, entry.usage, entry.dialect
        )
    return RouteResult(response, alias, entry.deployment, 0, None)


class _Miss:
    """What a miss needs to route, coalesce and store."""

    __slots__ = ("controls", "ctx", "endpoint", "key", "settings")

    def __init__(
        self,
        ctx: RouteContext,
        key: str,
        settings: CacheSettings,
        controls: Controls,
        endpoint: str,
    ) -> None:
        self.ctx = ctx
        self.key = key
        self.settings = settings
        self.controls = controls
        self.endpoint = endpoint


class CacheStage:
    """See the module docstring. One per service: the stores and the flights outlive
    reloads (a reload that changes the cache's ``type`` or Redis starts a new store)."""

    def __init__(self) -> None:
        self.stores = AnswerStores()
        #: Requests in flight that an identical one may join, by key.
        self.flights: dict[str, Flight] = {}
        #: The outer half, to put above the limits stage.
        self.lookup = CacheLookup(self)

    def before(self, ctx: RouteContext) -> Before:
        """The lookup's finding: a hit answers now; a miss coalesces or routes."""
        found = ctx.scratch.pop(CacheStage, None)
        if found is None:  # the cache stepped aside (off, bypassed)
            return None
        if isinstance(found, RouteResult):
            return found
        return self._miss(found)

    def look(self, ctx: RouteContext) -> Before:
        """The lookup (see :class:`CacheLookup`): its finding in ``ctx.scratch``."""
        call = ctx.call
        body = call.body
        field = body.get("cache") if "cache" in body else None
        if isinstance(field, dict):  # LiteLLM's controls never go upstream
            ctx.call = call = replace(call, body={k: v for k, v in body.items() if k != "cache"})
        general = ctx.gateway.router.table.config.general
        settings = general.cache
        if settings is None:
            return None
        endpoint = call.endpoint.value
        request = ctx.request
        if endpoint not in settings.endpoints or not general.for_alias(ctx.alias).cache:
            self._bypass(ctx, endpoint)
            return None
        header = request.getHeader(b"cache-control")
        controls = NONE if header is None and field is None else parse_controls(header, field)
        scope = request.key_name if settings.scope == "key" else None
        namespace = settings.namespace
        if controls.namespace:
            namespace = f"{namespace}\x00{controls.namespace}"
        key = cache_key(ctx.alias, endpoint, call.dialect.value, call.body, scope, namespace)
        miss = _Miss(ctx, key, settings, controls, endpoint)
        ctx.scratch[CacheStage] = miss
        store = self.stores.get(ctx.gateway, general, settings)
        if store is None or not controls.read:
            return None
        found = store.get(key)
        if isinstance(found, Deferred):
            return found.addCallback(self._looked, miss)
        self._looked(found, miss)
        return None

    def after(self, ctx: RouteContext, result: RouteResult | None, failure: Failure | None) -> None:
        """Nothing to settle: a flight stores its answer when it is complete."""

    def close(self) -> Deferred[None]:
        """At shutdown: the cache's own Redis connection closed. Fires with None."""
        return self.stores.close()

    # -- hits --------------------------------------------------------------------

    def _looked(self, entry: CachedAnswer | None, miss: _Miss) -> RouteResult | None:
        """A hit: the answer in ``ctx.scratch`` for :meth:`before`, and ``ctx.cached``
        for the limits stage. Always None: the lookup never answers itself."""
        ctx = miss.ctx
        if entry is not None:
            age = ctx.gateway.clock.seconds() - entry.stored
            max_age = miss.controls.max_age
            if max_age is None or age <= max_age:
                result = served(entry, ctx.call.stream, ctx.alias)
                if result is not None:
                    self._hit(ctx, miss.endpoint, "hit")
                    ctx.request.setHeader(b"age", b"%d" % max(0, int(age)))
                    ctx.scratch[CacheStage] = result
        return None

    def _hit(self, ctx: RouteContext, endpoint: str, label: str) -> None:
        ctx.cached = True
        request: Any = ctx.request
        request.cached = True
        request.setHeader(X_GATEWAYD_CACHE, b"hit")
        ctx.gateway.metrics.cache_requests.inc(ctx.alias, endpoint, label)

    def _bypass(self, ctx: RouteContext, endpoint: str) -> None:
        ctx.request.setHeader(X_GATEWAYD_CACHE, b"bypass")
        ctx.gateway.metrics.cache_requests.inc(ctx.alias, endpoint, "bypass")

    # -- misses: coalesce, or lead a flight that stores the answer ---------------

    def _miss(self, miss: _Miss) -> Before:
        ctx, settings, controls = miss.ctx, miss.settings, miss.controls
        stream = ctx.call.stream
        coalesce = settings.coalesce or settings.coalesce_only
        if coalesce and controls.read:  # no-cache asks for an upstream call of its own
            flight = self.flights.get(miss.key)
            if flight is not None and not flight.done:
                return flight.join(stream).addCallback(self._joined, miss, flight)
        label = "miss" if controls.read and not settings.coalesce_only else "bypass"
        ctx.request.setHeader(X_GATEWAYD_CACHE, label.encode())
        ctx.gateway.metrics.cache_requests.inc(ctx.alias, miss.endpoint, label)
        writes = not settings.coalesce_only and controls.write and controls.ttl != 0
        if not writes and not (coalesce and controls.read):
            return None  # nothing to share, nothing to store: route as usual
        clock = ctx.gateway.clock
        flight = Flight(
            lambda entry, s: served(entry, s, ctx.alias),
            lambda f, entry, result: self._landed(f, entry, miss, writes),
            clock.seconds,
            BACKLOG_BYTES,
            min(RECORD_LIMIT, settings.max_bytes),
        )
        if coalesce and controls.read:
            self.flights[miss.key] = flight
        # None (the flight cannot serve the leader's shape): the pipeline routes it alone.
        route = ctx.route or route_alias
        return flight.lead(route(ctx), stream)

    def _joined(self, result: RouteResult | None, miss: _Miss, flight: Flight) -> Before:
        ctx = miss.ctx
        if result is None:  # the shared call failed or cannot serve this shape: alone
            ctx.request.setHeader(X_GATEWAYD_CACHE, b"miss")
            ctx.gateway.metrics.cache_requests.inc(ctx.alias, miss.endpoint, "miss")
            return None
        if flight.owned is result:  # the leader went: this one carries its reservations
            ctx.request.setHeader(X_GATEWAYD_CACHE, b"miss")
            ctx.gateway.metrics.cache_requests.inc(ctx.alias, miss.endpoint, "miss")
            return result
        self._hit(ctx, miss.endpoint, "coalesced")
        return result

    def _landed(
        self, flight: Flight, entry: CachedAnswer | None, miss: _Miss, writes: bool
    ) -> None:
        if self.flights.get(miss.key) is flight:
            del self.flights[miss.key]
        if entry is None or not writes or entry.status != 200:
            return
        store = self.stores.current
        if store is not None:
            ttl = miss.controls.ttl if miss.controls.ttl is not None else miss.settings.ttl
            store.put(miss.key, entry, ttl)


class CacheLookup:
    """The cache's outer stage: strips LiteLLM's ``cache`` body field, reads the
    request's controls and looks it up (a malformed control refuses it with a 400).
    Its finding is for :class:`CacheStage`, below the limits stage."""

    def __init__(self, cache: CacheStage) -> None:
        self.cache = cache

    def before(self, ctx: RouteContext) -> Before:
        return self.cache.look(ctx)

    def after(self, ctx: RouteContext, result: RouteResult | None, failure: Failure | None) -> None:
        ctx.scratch.pop(CacheStage, None)  # refused before the cache stage ran
