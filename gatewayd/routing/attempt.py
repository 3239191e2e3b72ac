"""One attempt on one deployment: sent with its in-flight slot taken, and what its
success means for the deployment's health and the metrics (failures are the router's:
they decide retries and fallbacks)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from gatewayd.config.model import Deployment
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.providers.base import AttemptLimits, ProviderRequest, UpstreamFailure
from gatewayd.providers.dialect import send_in_dialect
from gatewayd.routing.balancer import Balancer
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.latency import LatencyBook
from gatewayd.routing.outcome import Progress, RouteResult
from gatewayd.routing.table import Route, RoutingTable
from gatewayd.tracing.request_trace import trace_of


def _nothing_to_finish(_: UpstreamFailure | None) -> None:
    """A JSON answer's ``finish``: its deployment's slot was freed when it arrived."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt under way: its deployment, rpm/tpm reservation (or None), in-flight
    slot's release, start time, and the Deferred of its upstream response."""

    route: Route
    ticket: Any
    release: Callable[[], None]
    started: float
    sent: Deferred[Any]

    def forget_traceback(self, failure: BaseException) -> None:
        """Drop the traceback of the failure ``sent`` fired with: it holds the frames
        that hold the Failure that holds it, a reference cycle per failed attempt that
        only the cyclic collector would free (an expected upstream failure's traceback
        is never shown)."""
        failure.__traceback__ = None
        result = getattr(self.sent, "result", None)
        if isinstance(result, Failure):
            result.tb = None


class Attempts:
    """Starts attempts and books their successes, for one :class:`Router`."""

    def __init__(
        self,
        clock: IReactorTime,
        balancer: Balancer,
        health: Cooldowns,
        metrics: GatewayMetrics,
        latency: LatencyBook | None = None,
    ) -> None:
        self.clock = clock
        self.latency = latency
        self.balancer = balancer
        self.health = health
        self.metrics = metrics

    def launch(
        self,
        table: RoutingTable,
        route: Route,
        ticket: Any,
        request: ProviderRequest,
        progress: Progress,
    ) -> Attempt:
        """Send ``request`` to ``route`` (its in-flight slot taken, the attempt counted)."""
        release = self.balancer.acquire(route)
        progress.attempts += 1
        started = self.clock.seconds()
        try:
            sent = trace_of(request).send(
                route.provider, request, limits(route.deployment, request, table), send_in_dialect
            )
        except BaseException:
            sent = fail()
        return Attempt(route, ticket, release, started, sent)

    def succeeded(
        self, alias: str, attempt: Attempt, response: Any, progress: Progress
    ) -> RouteResult:
        route, release, ticket = attempt.route, attempt.release, attempt.ticket
        took = self.clock.seconds() - attempt.started
        self.health.success(route.id)
        self.metrics.attempts.inc(alias, route.id, "ok")
        self.metrics.upstream_latency.observe(took, alias, route.id)
        if self.latency is not None:
            self.latency.observe_success(route.id, response.stream is not None, took, response.body)
        tickets = [] if ticket is None else [ticket]
        if response.stream is None:
            release()  # a JSON answer is complete: its slot is free now
            finish: Callable[[UpstreamFailure | None], None] = _nothing_to_finish
        else:
            finish = self._stream_finish(route, release)
        return RouteResult(
            response, alias, route.id, progress.attempts, None, finish, took, tickets
        )

    def _stream_finish(
        self, route: Route, release: Callable[[], None]
    ) -> Callable[[UpstreamFailure | None], None]:
        def finish(failure: UpstreamFailure | None) -> None:
            release()
            if failure is not None:
                self.metrics.stream_failures.inc(route.model_name, route.id)
                self.health.failure(route.id, failure.message, failure.status, transient=False)

        return finish


def limits(dep: Deployment, request: ProviderRequest, table: RoutingTable) -> AttemptLimits:
    g = table.config.general
    timeout = dep.timeout or g.request_timeout
    if request.stream:
        timeout = dep.stream_timeout or timeout
    return AttemptLimits(timeout=timeout, idle_timeout=g.stream_idle_timeout)
