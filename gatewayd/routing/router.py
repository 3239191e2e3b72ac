"""The router: one request through balancing, retries, cooldowns and fallbacks.

Everything is Deferred-based and runs on an injected clock, so every timing is
testable with :class:`twisted.internet.task.Clock`. Cancelling the Deferred
returned by :meth:`Router.route` (a client disconnect) cancels whatever is in
progress: an upstream attempt (closing its connection), a backoff sleep, or a
wait for capacity.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from gatewayd.config.model import Deployment, GeneralSettings
from gatewayd.log import get_logger
from gatewayd.metrics import GatewayMetrics, Sample
from gatewayd.providers.base import (
    AttemptLimits,
    FailureKind,
    ProviderRequest,
    UpstreamFailure,
    UpstreamResponse,
    openai_error,
)
from gatewayd.providers.dialect import send_in_dialect
from gatewayd.routing.balancer import Balancer
from gatewayd.routing.classify import Verdict, classify
from gatewayd.routing.cooldown import Cooldowns, DeploymentHealth
from gatewayd.routing.fallback import FallbackChain
from gatewayd.routing.retry import RetryPolicy
from gatewayd.routing.table import Route, RoutingTable

log = get_logger(__name__)


@dataclass
class RouteResult:
    """The first success, and what it took to get it."""

    response: UpstreamResponse
    alias: str
    deployment: str
    attempts: int
    fallback: str | None
    #: Call when a stream has been relayed to its end (frees the deployment's slot).
    finish: Callable[[UpstreamFailure | None], None] = field(default=lambda _: None)
    #: Seconds the answering upstream took (JSON body, or a stream's first byte).
    upstream_seconds: float = 0.0


class RouteError(Exception):
    """Every attempt failed, or the request is the client's own problem.

    ``status`` and ``error`` are what the client gets, in OpenAI's shape.
    """

    def __init__(
        self,
        status: int,
        error: dict[str, Any],
        attempts: int,
        deployment: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(error.get("message", ""))
        self.status = status
        self.error = error
        self.attempts = attempts
        self.deployment = deployment
        #: The last upstream's Retry-After, for the client to honour.
        self.retry_after = retry_after


class _AllCoolingDown(Exception):
    """Every deployment of the alias is in cooldown and a fallback is left."""


@dataclass
class _Progress:
    attempts: int = 0
    failed: list[str] = field(default_factory=list)
    #: Timed out or cancelled by the client: no further attempt may start.
    stopped: bool = False


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
        self.balancer = Balancer(g.routing_strategy, self.health, self.rng)
        self.table = table
        self._apply(g)
        self.metrics.in_flight.collect = lambda: self._gauge(lambda h, now: h.in_flight)
        self.metrics.cooldown.collect = lambda: self._gauge(lambda h, now: h.cooling(now))

    def _gauge(self, read: Callable[[DeploymentHealth, float], float]) -> list[Sample]:
        now = self.health.now()
        return [
            ((r.model_name, r.id), float(read(self.health.get(r.id), now)))
            for routes in self.table.routes.values()
            for r in routes
        ]

    def _apply(self, g: GeneralSettings) -> None:
        self.health.allowed_fails = g.allowed_fails
        self.health.cooldown_time = g.cooldown_time
        self.balancer.strategy = g.routing_strategy
        self.policy = RetryPolicy(num_retries=g.num_retries, max_retry_after=g.max_retry_after)

    def swap(self, table: RoutingTable) -> None:
        """Route new requests by ``table``; requests in flight finish on the old one.
        What is known of deployments that stay (cooldowns, in-flight counts) is kept."""
        self.table = table
        self._apply(table.config.general)
        self.health.retain_only({d.id for d in table.config.deployments} | self._in_flight_ids())

    def _in_flight_ids(self) -> set[str]:
        return {k for k, h in self.health.states.items() if h.in_flight}

    # -- entry point -----------------------------------------------------------

    def route(self, alias: str, request: ProviderRequest) -> Deferred[RouteResult]:
        """Fires with a :class:`RouteResult`, or fails with :class:`RouteError`.

        The alias must exist in the current table (the caller checks, to answer 404).
        """
        table = self.table
        progress = _Progress()
        timeout = table.config.general.request_timeout
        inner = Deferred.fromCoroutine(self._route(table, alias, request, progress))
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

        def settle(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if expired and isinstance(result, Failure):
                return Failure(self._timed_out(alias, timeout, progress))
            return result

        inner.addBoth(settle).chainDeferred(outer)
        return outer

    def _timed_out(self, alias: str, timeout: float, progress: _Progress) -> RouteError:
        if progress.attempts == 0:
            return RouteError(
                503,
                openai_error(
                    f"no deployment of {alias!r} could be tried within request_timeout "
                    f"({timeout:g} s): all were at max_parallel_requests",
                    "service_unavailable",
                    "no_deployment_available",
                ),
                0,
            )
        return RouteError(
            504,
            openai_error(
                f"request_timeout of {timeout:g} s exceeded after {progress.attempts} attempt(s)",
                "timeout",
                "request_timeout",
            ),
            progress.attempts,
        )

    async def _route(
        self, table: RoutingTable, alias: str, request: ProviderRequest, progress: _Progress
    ) -> RouteResult:
        chain = FallbackChain(table, alias)
        last: UpstreamFailure | None = None
        while True:
            current = chain.current
            try:
                result = await self._alias(table, current, request, progress, chain.has_next())
            except _AllCoolingDown:
                progress.failed.append(f"{current} (all deployments cooling down)")
            except UpstreamFailure as f:
                last = f
                progress.failed.append(current)
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
            if not chain.advance():
                break
        raise self._exhausted(last, progress)

    def _exhausted(self, last: UpstreamFailure | None, progress: _Progress) -> RouteError:
        where = ", ".join(progress.failed)
        summary = f"gatewayd: {progress.attempts} attempt(s) failed on {where}"
        if last is None:
            return RouteError(
                503,
                openai_error(
                    f"no deployment could be tried ({summary})",
                    "service_unavailable",
                    "no_deployment_available",
                ),
                progress.attempts,
            )
        error = dict(last.error)
        error["message"] = f"{last.message} ({summary})" if last.message else summary
        return RouteError(last.status, error, progress.attempts, last.deployment, last.retry_after)

    # -- one alias -------------------------------------------------------------

    async def _alias(
        self,
        table: RoutingTable,
        alias: str,
        request: ProviderRequest,
        progress: _Progress,
        can_skip: bool,
    ) -> RouteResult:
        routes = table.routes[alias]
        if request.pin is not None:  # a native upstream's response id: only it knows it
            routes = tuple(r for r in routes if r.id == request.pin) or routes
        tried: set[str] = set()
        retries = self.policy.num_retries
        for n in range(retries + 1):
            route = await self._pick(alias, routes, tried, can_skip)
            tried.add(route.id)
            release = self.balancer.acquire(route)
            progress.attempts += 1
            started = self.clock.seconds()
            try:
                response = await send_in_dialect(
                    route.provider, request, _limits(route.deployment, request, table)
                )
            except UpstreamFailure as f:
                if progress.stopped:  # the attempt failed because we abandoned it
                    release()
                    raise CancelledError() from None
                self.metrics.attempts.inc(alias, route.id, _outcome(f))
                verdict = classify(f)
                # Health first: release() may wake a queued request that must already
                # see a cooldown this failure trips.
                self.health.failure(
                    route.id,
                    f.message,
                    f.status,
                    transient=verdict is Verdict.RETRY,
                    retry_after=f.retry_after,
                )
                release()
                wait = None
                if verdict is Verdict.RETRY and n < retries:
                    wait = self._wait_before(n + 1, f, routes, tried, can_skip)
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
                continue
            except BaseException:
                release()
                raise
            took = self.clock.seconds() - started
            self.health.success(route.id)
            self.metrics.attempts.inc(alias, route.id, "ok")
            self.metrics.upstream_latency.observe(took, alias, route.id)
            if response.stream is None:
                release()
                return RouteResult(
                    response, alias, route.id, progress.attempts, None, upstream_seconds=took
                )
            return RouteResult(
                response,
                alias,
                route.id,
                progress.attempts,
                None,
                self._stream_finish(route, release),
                took,
            )
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _stream_finish(
        self, route: Route, release: Callable[[], None]
    ) -> Callable[[UpstreamFailure | None], None]:
        def finish(failure: UpstreamFailure | None) -> None:
            release()
            if failure is not None:
                self.metrics.stream_failures.inc(route.model_name, route.id)
                self.health.failure(route.id, failure.message, failure.status, transient=False)

        return finish

    def _wait_before(
        self,
        retry: int,
        f: UpstreamFailure,
        routes: Sequence[Route],
        tried: set[str],
        can_skip: bool,
    ) -> float | None:
        """Seconds to sleep before the next attempt on this alias, or None to give up on
        it: none while another healthy deployment is left; give up when the upstream asked
        for too long a wait, or when every deployment is cooling down and a fallback is
        left (never wait on a deployment known to be down)."""
        healthy = [r for r in routes if not self.health.is_cooling(r.id)]
        if any(r.id not in tried for r in healthy):
            return 0.0
        if not healthy and can_skip:
            return None
        return self.policy.wait_before_retry(retry, f.retry_after, self.rng)

    async def _pick(
        self, alias: str, routes: Sequence[Route], tried: set[str], can_skip: bool
    ) -> Route:
        """A deployment for the next attempt: healthy and untried first; waits (FIFO)
        while all are at ``max_parallel_requests``."""
        while True:
            healthy = [r for r in routes if not self.health.is_cooling(r.id)]
            if not healthy:
                if can_skip:
                    raise _AllCoolingDown()
                # Nowhere else to go: probe the one whose cooldown ends first.
                healthy = [min(routes, key=lambda r: self.health.get(r.id).cooldown_until)]
            untried = [r for r in healthy if r.id not in tried]
            choice = self.balancer.choose(untried) or self.balancer.choose(healthy)
            if choice is not None:
                assert isinstance(choice, Route)
                return choice
            await self.balancer.wait_for_room(alias)


def _outcome(f: UpstreamFailure) -> str:
    """A low-cardinality label for a failed attempt: ``http_503``, ``connect``, ``timeout``."""
    return f"http_{f.status}" if f.kind is FailureKind.HTTP else f.kind.value


def _limits(dep: Deployment, request: ProviderRequest, table: RoutingTable) -> AttemptLimits:
    g = table.config.general
    timeout = dep.timeout or g.request_timeout
    if request.stream:
        timeout = dep.stream_timeout or timeout
    return AttemptLimits(timeout=timeout, idle_timeout=g.stream_idle_timeout)


__all__ = ["FailureKind", "RouteError", "RouteResult", "Router"]
