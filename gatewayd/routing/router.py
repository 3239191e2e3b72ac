"""The router: one request through balancing, retries, cooldowns and fallbacks.

Everything is Deferred-based and runs on an injected clock, so every timing is
testable with :class:`twisted.internet.task.Clock`. Cancelling the Deferred
returned by :meth:`Router.route` (a client disconnect) cancels whatever is in
progress: an upstream attempt (closing its connection), a backoff sleep, or a
wait for capacity.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from gatewayd.config.model import GeneralSettings
from gatewayd.limits import Limiter, Spent
from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics, Sample
from gatewayd.providers.base import (
    FailureKind,
    ProviderRequest,
    UpstreamFailure,
)
from gatewayd.routing.attempt import Attempt, Attempts
from gatewayd.routing.balancer import Balancer
from gatewayd.routing.classify import Verdict, classify
from gatewayd.routing.cooldown import Cooldowns, DeploymentHealth
from gatewayd.routing.fallback import FallbackChain
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
from gatewayd.routing.retry import RetryPolicy, owed_backoff, wait_before_next
from gatewayd.routing.serving import ServingIndex
from gatewayd.routing.table import Route, RoutingTable

log = get_logger(__name__)

#: Deployments' worth of swap work between two yields of :meth:`Router.swap_in_steps`
#: (building 100 pools' entries takes about a millisecond).
SWAP_STEP = 100


class Router:
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
        self.attempts = Attempts(clock, self.balancer, self.health, self.metrics)
        self.picker = Picker(self.balancer, self.rng)
        self.table = table
        #: Told when this instance puts a deployment in cooldown (to share it).
        self.on_cooldown: Callable[[str, float], None] | None = None
        self._apply(g)
        self._pools = self._index(table)
        self._unlimited = _unlimited(table)
        #: Which deployments serve which endpoint (``params.api_endpoints``).
        self.endpoints = ServingIndex()
        self._gauge_keys: tuple[RoutingTable | None, list[tuple[tuple[str, str], str]]] = (None, [])
        self.metrics.in_flight.collect = lambda: self._gauge(lambda h, now: h.in_flight)
        self.metrics.cooldown.collect = lambda: self._gauge(lambda h, now: h.cooling(now))

    @property
    def limiter(self) -> Limiter | None:
        """Deployment rpm/tpm limits (set by the service); None = no limits anywhere."""
        return self.picker.limiter

    @limiter.setter
    def limiter(self, limiter: Limiter | None) -> None:
        self.picker.limiter = limiter

    def _gauge(self, read: Callable[[DeploymentHealth, float], float]) -> list[Sample]:
        now, get, table = self.health.now(), self.health.get, self.table
        if self._gauge_keys[0] is not table:  # label tuples made once per table
            keys = [((r.model_name, r.id), r.id) for rs in table.routes.values() for r in rs]
            self._gauge_keys = (table, keys)
        return [(labels, float(read(get(i), now))) for labels, i in self._gauge_keys[1]]

    def _apply(self, g: GeneralSettings) -> None:
        self.health.allowed_fails = g.allowed_fails
        self.health.cooldown_time = g.cooldown_time
        self.policy = RetryPolicy(num_retries=g.num_retries, max_retry_after=g.max_retry_after)

    def swap(self, table: RoutingTable) -> None:
        """Route new requests by ``table``; requests in flight finish on the old one.
        What is known of deployments that stay (cooldowns, in-flight counts) is kept."""
        for _ in self.swap_in_steps(table, step=0):
            pass

    def swap_in_steps(
        self,
        table: RoutingTable,
        step: int = SWAP_STEP,
        on_swap: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """:meth:`swap`, yielding after every ``step`` deployments' worth of work (0:
        never), for a :class:`~twisted.internet.task.Cooperator` in the reactor thread.

        The new pools are built first (each follows health changes from the moment it
        exists), then the table and its pools are swapped in one statement (``on_swap``
        called right after, in the same step): a request sees the old table and pools or
        the new ones, never a mix. The watchers of the replaced pools are dropped last.
        Abandoned before the swap, the old table stays."""
        strategy = table.config.general.routing_strategy
        pools: dict[str, AliasPool] = {}
        done = 0
        for alias, routes in table.routes.items():
            pools[alias] = AliasPool(routes, self.health, strategy)
            done += len(routes)
            if step and done >= step:
                done = 0
                yield
        unlimited = _unlimited(table)
        # The old pools go now, or with their last request.
        self.table, self._pools, self._unlimited = table, pools, unlimited
        self._apply(table.config.general)
        self.health.retain_only({d.id for d in table.config.deployments} | self._in_flight_ids())
        if on_swap is not None:
            on_swap()
        for _ in self.health.pruning_watchers(step):
            yield

    def _index(self, table: RoutingTable) -> Mapping[str, AliasPool]:
        """One pool per alias: built once per table (O(deployments)), then kept up to
        date by health changes, so that a request's picks do not walk the alias."""
        strategy = table.config.general.routing_strategy
        return {
            alias: AliasPool(routes, self.health, strategy)
            for alias, routes in table.routes.items()
        }

    def _in_flight_ids(self) -> set[str]:
        return {k for k, h in self.health.states.items() if h.in_flight}

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
                pool = AliasPool(pinned, self.health, table.config.general.routing_strategy)
        elif (partial := self.endpoints.only(table, alias, request.endpoint)) is not None:
            pool = AliasPool(partial, self.health, table.config.general.routing_strategy)
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
            try:
                response = await attempt.sent
            except UpstreamFailure as f:
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
            return self.attempts.succeeded(alias, attempt, response, progress)
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
        if self.endpoints.only(table, alias, request.endpoint) is not None:  # some do not
            return None
        choice = pool.choose_now((), self.rng)
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


def _unlimited(table: RoutingTable) -> frozenset[str]:
    """The aliases none of whose deployments has an rpm or tpm limit."""
    return frozenset(
        alias
        for alias, routes in table.routes.items()
        if all(r.deployment.rpm is None and r.deployment.tpm is None for r in routes)
    )


__all__ = ["FailureKind", "RouteError", "RouteResult", "Router"]
