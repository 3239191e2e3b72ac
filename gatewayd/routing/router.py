"""The router: one request through balancing, retries, cooldowns and fallbacks.

Everything is Deferred-based and runs on an injected clock, so every timing is
testable with :class:`twisted.internet.task.Clock`. Cancelling the Deferred
returned by :meth:`Router.route` (a client disconnect) cancels whatever is in
progress: an upstream attempt (closing its connection), a backoff sleep, or a
wait for capacity.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from gatewayd.limits import Limiter, Spent
from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.providers.base import (
    FailureKind,
    ProviderRequest,
    UpstreamFailure,
)
from gatewayd.routing.attempt import Attempt, Attempts
from gatewayd.routing.balancer import Balancer
from gatewayd.routing.classify import Verdict, classify
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.fallback import FallbackChain
from gatewayd.routing.hedge import Hedger, Hedging
from gatewayd.routing.latency import LatencyBook
from gatewayd.routing.outcome import (
    AllCoolingDown,
    AllLimited,
    Progress,
    RouteError,
    RouteResult,
    exhausted,
    outcome_label,
    reason,
    timed_out,
)
from gatewayd.routing.picking import Picker
from gatewayd.routing.pool import AliasPool
from gatewayd.routing.retry import owed_backoff, wait_before_next
from gatewayd.routing.serving import ServingIndex
from gatewayd.routing.strategies import make_pool
from gatewayd.routing.table import Route, RoutingTable
from gatewayd.routing.table_swap import TableSwap, unlimited_aliases

log = get_logger(__name__)


class Router(TableSwap):
    """Routes requests by alias over the current :class:`RoutingTable`."""

    def __init__(
        self,
        table: RoutingTable,
        clock: IReactorTime,
        rng: random.Random | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.clock = clock
        self.rng = rng or random.Random()
        self.metrics = metrics or GatewayMetrics()
        g = table.config.general
        self.health = Cooldowns(clock, g.allowed_fails, g.cooldown_time)
        self.balancer = Balancer(self.health)
        #: Latency estimates per deployment (latency-based-routing; /health shows them).
        self.latency = LatencyBook(clock)
        self.attempts = Attempts(clock, self.balancer, self.health, self.metrics, self.latency)
        self.picker = Picker(self.balancer, self.rng)
        self.hedging = Hedging(clock, self.metrics)
        self.hedger = Hedger(self.hedging, self.attempts, self.health, self.rng, self._tripped)
        self.table = table
        #: Told when this instance puts a deployment in cooldown (to share it).
        self.on_cooldown: Callable[[str, float], None] | None = None
        self._apply(g)
        self._pools = self._index(table)
        self._unlimited = unlimited_aliases(table)
        #: Which deployments serve which endpoint (``params.api_endpoints``).
        self.endpoints = ServingIndex()
        self._gauge_keys: tuple[RoutingTable | None, list[tuple[tuple[str, str], str]]] = (None, [])
        self.metrics.in_flight.collect = lambda: self._gauge(lambda h, now: h.in_flight)
        self.metrics.cooldown.collect = lambda: self._gauge(lambda h, now: h.cooling(now))
        self.metrics.latency.collect = lambda: self.latency.samples(self.table.routes)

    def _tripped(self, deployment_id: str, until: float) -> None:
        if self.on_cooldown is not None:  # shared through the state store
            self.on_cooldown(deployment_id, until)

    @property
    def limiter(self) -> Limiter | None:
        """Deployment rpm/tpm limits (set by the service); None = no limits anywhere."""
        return self.picker.limiter

    @limiter.setter
    def limiter(self, limiter: Limiter | None) -> None:
        self.picker.limiter = limiter

    # -- entry point -----------------------------------------------------------

    def route(self, alias: str, request: ProviderRequest) -> Deferred[RouteResult]:
        """Fires with a :class:`RouteResult`, or fails with :class:`RouteError`.

        The alias must exist in the current table (the caller checks, to answer 404).
        """
        table, pools = self.table, self._pools
        progress = Progress()
        timeout = table.config.general.request_timeout
        first = self._first_attempt(table, pools[alias], alias, request, progress)
        if first is None:
            inner = Deferred.fromCoroutine(self._route(table, pools, alias, request, progress))
        else:
            inner = self._follow(first, table, pools, alias, request, progress)
        expired: list[bool] = []

        def stop() -> None:
            # Whatever the attempt in progress fails with now, the chain must not go on.
            progress.stopped = True
            inner.cancel()

        def expire() -> None:
            expired.append(True)
            stop()

        timer = self.clock.callLater(timeout, expire)
        outer: Deferred[RouteResult] = Deferred(lambda _: stop())

        # One link (settle, then chain) rather than two: this runs once per request.
        def settle(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                if expired:
                    result = Failure(timed_out(alias, timeout, progress))
                outer.errback(result)
            else:
                outer.callback(result)

        inner.addBoth(settle)
        return outer

    async def _route(
        self,
        table: RoutingTable,
        pools: Mapping[str, AliasPool],
        alias: str,
        request: ProviderRequest,
        progress: Progress,
        first: Attempt | None = None,
    ) -> RouteResult:
        chain = FallbackChain(table, alias)
        last: UpstreamFailure | None = None
        while True:
            current = chain.current
            if not self.endpoints.any(table, current, request.endpoint):  # api_endpoints
                progress.failed[current] = "no deployment serves this endpoint"
                first = None
                if not chain.advance():
                    break
                continue
            try:
                result = await self._alias(
                    table, pools[current], current, request, progress, chain.has_next(), first
                )
            except AllCoolingDown:
                progress.failed[current] = "all deployments cooling down"
            except AllLimited:
                progress.failed[current] = "all deployments at their rate limits"
            except UpstreamFailure as f:
                f.__traceback__ = None  # kept in `last`: its frames would hold it in a cycle
                last = f
                verdict = classify(f)
                if verdict is Verdict.CLIENT or (
                    verdict is Verdict.CONTEXT_WINDOW and not chain.switch_to_context_window()
                ):
                    # The request's own problem: back to the client as the upstream said it.
                    raise RouteError(
                        f.status, f.error, progress.attempts, f.deployment, f.retry_after
                    ) from None
            else:
                if current != alias:
                    result.fallback = current
                    self.metrics.fallbacks.inc(alias, current)
                return result
            first = None
            if not chain.advance():
                break
        raise exhausted(last, progress)

    # -- one alias -------------------------------------------------------------

    async def _alias(
        self,
        table: RoutingTable,
        pool: AliasPool,
        alias: str,
        request: ProviderRequest,
        progress: Progress,
        can_skip: bool,
        first: Attempt | None = None,
    ) -> RouteResult:
        """The attempts on one alias; ``first``: its first attempt, already made (and
        failed) by :meth:`route`'s fast path."""
        if request.pin is not None:  # a native upstream's response id: only it knows it
            pinned = [r for r in table.routes[alias] if r.id == request.pin]
            if pinned:
                pool = make_pool(alias, pinned, self.health, table.config.general, self.latency)
        elif (partial := self.endpoints.only(table, alias, request.endpoint)) is not None:
            pool = make_pool(alias, partial, self.health, table.config.general, self.latency)
        tried: set[str] = set()
        retries = self.policy.num_retries
        #: The last failure, when its retry skipped the backoff for another deployment.
        owed: UpstreamFailure | None = None
        for n in range(retries + 1):
            if first is not None:
                attempt, first = first, None
                tried.add(attempt.route.id)
            else:
                route, ticket = await self.picker.admitted(
                    alias, pool, tried, can_skip, request, progress
                )
                if owed is not None and route.id in tried:
                    # The other deployment was at its rpm/tpm: back off as for a lone one.
                    skip = tried | progress.limited.keys()
                    await owed_backoff(
                        self.policy, self.rng, self.clock, n, owed, pool, skip, can_skip, ticket
                    )
                owed = None
                tried.add(route.id)
                attempt = self.attempts.launch(table, route, ticket, request, progress)
            route, ticket, release = attempt.route, attempt.ticket, attempt.release
            unlimited = table.origin(alias) in self._unlimited
            race = self.hedger.race(
                table, pool, alias, request, progress, attempt, tried, unlimited
            )
            try:
                if race is None:
                    response = await attempt.sent
                else:
                    try:
                        attempt, response = await race.result
                    finally:  # the copy that answered, or the one that failed last
                        attempt = race.current
                        route, ticket, release = attempt.route, attempt.ticket, attempt.release
            except UpstreamFailure as f:
                attempt.forget_traceback(f)  # (a reference cycle per failed attempt)
                if ticket is not None:
                    ticket.settle(Spent(0, 0))  # the request went out; no tokens were used
                if progress.stopped:  # the attempt failed because we abandoned it
                    release()
                    raise CancelledError() from None
                self.metrics.attempts.inc(alias, route.id, outcome_label(f))
                progress.failed[alias] = reason(f)
                verdict = classify(f)
                # Health first: release() may wake a queued request that must already
                # see a cooldown this failure trips.
                tripped = self.health.failure(
                    route.id,
                    f.message,
                    f.status,
                    transient=verdict is Verdict.RETRY,
                    retry_after=f.retry_after,
                )
                if tripped and self.on_cooldown is not None:
                    self.on_cooldown(route.id, self.health.get(route.id).cooldown_until)
                self.latency.after_failure(route.id, request.stream, attempt.started, tripped)
                release()
                wait = None
                if verdict is Verdict.RETRY and n < retries:
                    wait = wait_before_next(self.policy, self.rng, n + 1, f, pool, tried, can_skip)
                log.info(
                    "{alias}: attempt {n} on {dep} failed: {status} {msg}{then}",
                    alias=alias,
                    n=progress.attempts,
                    dep=route.id,
                    status=f.status,
                    msg=f.message,
                    then="" if wait is None else f"; retrying in {wait:.2f} s",
                )
                if wait is None:
                    raise
                self.metrics.retries.inc(alias)
                if wait > 0:
                    await deferLater(self.clock, wait)
                else:
                    owed = f
                continue
            except BaseException:
                if ticket is not None:
                    ticket.settle(Spent(0, 0))
                release()
                raise
            result = self.attempts.succeeded(alias, attempt, response, progress)
            if race is None:  # a hedged alias's quantile learns from every answer
                self.hedger.observe(table, alias, result.upstream_seconds)
            else:
                result.hedge = race.winner
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- one attempt -------------------------------------------------------------

    def _first_attempt(
        self,
        table: RoutingTable,
        pool: AliasPool,
        alias: str,
        request: ProviderRequest,
        progress: Progress,
    ) -> Attempt | None:
        """The first attempt, started here when nothing can make it wait (no pin, no
        rpm/tpm limit on the alias, an open deployment), so that a request answered at
        once needs no coroutine; None: :meth:`_route` makes it."""
        if request.pin is not None or alias not in self._unlimited:
            return None
        if table.config.general.hedge_for(alias) is not None:
            return None  # a hedged alias's attempts race: _alias runs them
        if self.endpoints.only(table, alias, request.endpoint) is not None:  # some do not
            return None
        choice = pool.choose_now((), self.rng, request)
        if choice is None:
            return None
        assert isinstance(choice, Route)
        return self.attempts.launch(table, choice, None, request, progress)

    def _follow(
        self,
        first: Attempt,
        table: RoutingTable,
        pools: Mapping[str, AliasPool],
        alias: str,
        request: ProviderRequest,
        progress: Progress,
    ) -> Deferred[RouteResult]:
        """Fires with the result of the fast path's ``first`` attempt; when it fails, the
        rest (its retries, fallbacks) is :meth:`_route`'s, as if it had made it."""

        def failed(failure: Failure) -> Deferred[RouteResult]:
            again = Attempt(first.route, first.ticket, first.release, first.started, fail(failure))
            return Deferred.fromCoroutine(
                self._route(table, pools, alias, request, progress, again)
            )

        sent: Deferred[Any] = first.sent
        return sent.addCallbacks(
            lambda response: self.attempts.succeeded(alias, first, response, progress), failed
        )


__all__ = ["FailureKind", "RouteError", "RouteResult", "Router"]
