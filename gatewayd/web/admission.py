"""A request's way through the limits: the key's limits and budget before routing
(the deployments' are checked by the router at pick time), and the settling of
every reservation with the real usage once the answer is complete.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

from gatewayd.limits import Estimate, Limiter, LimitExceeded, Spent, Ticket, cost, estimate
from gatewayd.log import get_logger
from gatewayd.metrics import GatewayMetrics
from gatewayd.providers.base import ProviderRequest, openai_error
from gatewayd.routing import RouteError, Router, RouteResult
from gatewayd.routing.table import RoutingTable
from gatewayd.state import StoreUnavailable
from gatewayd.web.request import GatewayRequest

log = get_logger(__name__)


class LimitedGateway(Protocol):
    @property
    def router(self) -> Router: ...

    @property
    def metrics(self) -> GatewayMetrics: ...

    @property
    def limiter(self) -> Limiter: ...


def _store_down(e: StoreUnavailable, attempts: int = 0) -> RouteError:
    log.debug("state store unavailable: {err}", err=str(e))
    return RouteError(
        503,
        openai_error(
            "the shared state store is unavailable and state_store_failure is closed",
            "service_unavailable",
            "state_store_unavailable",
        ),
        attempts,
        retry_after=1.0,
    )


def _prices(table: RoutingTable, alias: str, deployment: str | None) -> tuple[float, float]:
    """The answering deployment's prices; with no deployment yet, the alias's dearest."""
    routes = table.routes.get(alias, ())
    for r in routes:
        if r.id == deployment:
            return r.deployment.input_cost_per_token, r.deployment.output_cost_per_token
    if not routes:
        return 0.0, 0.0
    return (
        max(r.deployment.input_cost_per_token for r in routes),
        max(r.deployment.output_cost_per_token for r in routes),
    )


class Accounting:
    """Settles one request's reservations once, and counts its spend."""

    def __init__(
        self, gateway: LimitedGateway, request: GatewayRequest, alias: str, est: Estimate
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.alias = alias
        self.estimate = est
        self.tickets: list[Ticket] = []
        self.done = False

    def settle(self, result: RouteResult | None, usage: Any, served: bool = True) -> None:
        if self.done:
            return
        self.done = True
        spent = Spent.from_usage(usage)
        usd = 0.0
        table = self.gateway.router.table
        if result is not None:
            price_in, price_out = _prices(table, result.alias, result.deployment)
            counted = spent or Spent(self.estimate.prompt, self.estimate.completion)
            # No usage reported (a stream without include_usage): the reservation stands.
            usd = cost(counted.prompt, counted.completion, price_in, price_out)
            key = self.request.key_name or "-"
            m = self.gateway.metrics
            if usd:
                m.spend.inc(key, result.alias, result.deployment, amount=usd)
            for kind, n in (("prompt", counted.prompt), ("completion", counted.completion)):
                if n:
                    m.key_tokens.inc(key, result.alias, kind, amount=n)
        for t in self.tickets:
            if result is not None and spent is None:
                t.settle(Spent(self.estimate.prompt, self.estimate.completion), usd)
            else:
                t.settle(spent, usd, served)


async def _admitted(
    gateway: LimitedGateway, request: GatewayRequest, alias: str, call: ProviderRequest
) -> RouteResult:
    caller = request.caller
    key = None if caller is None else caller.key
    est = estimate(call.body)
    acct = Accounting(gateway, request, alias, est)
    if key is not None:
        price_in, price_out = _prices(gateway.router.table, alias, None)
        try:
            ticket = await gateway.limiter.admit_key(
                key, est, cost(est.prompt, est.completion, price_in, price_out)
            )
        except LimitExceeded as e:
            r = e.refusal
            code = "budget_exceeded" if r.budget else "rate_limit_exceeded"
            raise RouteError(
                429,
                openai_error(r.message(), "rate_limit_error", code),
                0,
                retry_after=max(1.0, r.retry_after),
                headers=r.headers,
            ) from None
        except StoreUnavailable as e:
            raise _store_down(e) from None
        acct.tickets.append(ticket)
        for name, value in ticket.headers:
            request.setHeader(name, value)
    try:
        result = await gateway.router.route(alias, call)
    except RouteError as e:
        acct.settle(None, None, served=e.attempts > 0)
        raise
    except StoreUnavailable as e:
        acct.settle(None, None, served=False)
        raise _store_down(e) from None
    except BaseException:
        acct.settle(None, None)
        raise
    acct.tickets += result.tickets
    if result.response.stream is None:
        acct.settle(result, result.response.usage)
    else:
        # The relay notes the stream's usage on the request as it passes.
        request.notifyFinish().addBoth(lambda _: acct.settle(result, request.usage))
    return result


def admitted_route(
    gateway: LimitedGateway, request: GatewayRequest, alias: str, call: ProviderRequest
) -> Deferred[RouteResult]:
    """:meth:`Router.route` behind the caller's key limits: fires with the
    :class:`RouteResult` or fails with :class:`RouteError` (429 over a limit or budget,
    503 when a closed state store is down). Cancelling it cancels the routing."""
    return Deferred.fromCoroutine(_admitted(gateway, request, alias, call))
