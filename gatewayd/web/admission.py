"""A request's way through the limits: the key's limits and budget before routing
(the deployments' are checked by the router at pick time), and the settling of
every reservation with the real usage once the answer is complete.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from gatewayd.limits import Estimate, Limiter, LimitExceeded, Spent, Ticket, cost, estimate
from gatewayd.limits.usagelog import UsageRecord
from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics
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
        self, gateway: LimitedGateway, request: GatewayRequest, alias: str, body: dict[str, Any]
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.alias = alias
        self.body = body
        self._estimate: Estimate | None = None
        self.tickets: list[Ticket] = []
        self.done = False

    @property
    def estimate(self) -> Estimate:
        # Computed only when needed: a key's reservation, or a stream without usage.
        if self._estimate is None:
            self._estimate = estimate(self.body)
        return self._estimate

    def settle(
        self, result: RouteResult | None, usage: Any, served: bool = True, status: int = 0
    ) -> None:
        if self.done:
            return
        self.done = True
        spent = Spent.from_usage(usage)
        usd = 0.0
        table = self.gateway.router.table
        counted = Spent(0, 0)
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
        self._log(result, counted, usd, status)
        for t in self.tickets:
            if result is not None and spent is None:
                t.settle(Spent(self.estimate.prompt, self.estimate.completion), usd)
            else:
                t.settle(spent, usd, served)

    def _log(self, result: RouteResult | None, spent: Spent, usd: float, status: int) -> None:
        usage_log = getattr(self.gateway, "usage_log", None)
        if usage_log is None:
            return
        r = self.request
        if result is not None:
            status = status or result.response.status
        record = UsageRecord(
            key=r.key_name,
            alias=result.alias if result is not None else self.alias,
            deployment=result.deployment if result is not None else r.deployment,
            prompt_tokens=spent.prompt,
            completion_tokens=spent.completion,
            cost_usd=usd,
            status=status or r.code,
            latency_ms=(time.monotonic() - r.started) * 1000.0,
            stream=bool(result is not None and result.response.stream is not None),
        )
        usage_log.write(record, time.time())


async def _admitted_key(
    gateway: LimitedGateway,
    request: GatewayRequest,
    alias: str,
    call: ProviderRequest,
    acct: Accounting,
    key: Any,
) -> RouteResult:
    request.setHeader(b"x-gatewayd-key", key.name.encode())  # the name, never the key
    est = acct.estimate
    price_in, price_out = _prices(gateway.router.table, alias, None)
    try:
        ticket = await gateway.limiter.admit_key(
            key, est, cost(est.prompt, est.completion, price_in, price_out)
        )
    except LimitExceeded as e:
        acct.settle(None, None, served=False, status=429)
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
        acct.settle(None, None, served=False, status=503)
        raise _store_down(e) from None
    acct.tickets.append(ticket)
    for name, value in ticket.headers:
        request.setHeader(name, value)
    return await _routed(gateway, request, alias, call, acct)


def _routed(
    gateway: LimitedGateway,
    request: GatewayRequest,
    alias: str,
    call: ProviderRequest,
    acct: Accounting,
) -> Deferred[RouteResult]:
    """The routing, with the request's reservations settled whatever its outcome."""

    def settle(result: Any) -> Any:
        if isinstance(result, Failure):
            e = result.value
            if isinstance(e, RouteError):
                acct.settle(None, None, served=e.attempts > 0, status=e.status)
            elif isinstance(e, StoreUnavailable):
                acct.settle(None, None, served=False, status=503)
                return Failure(_store_down(e))
            else:
                acct.settle(None, None, status=499)
            return result
        acct.tickets += result.tickets
        if result.response.stream is None:
            acct.settle(result, result.response.usage)
        elif request.finished or getattr(request, "_disconnected", False):
            acct.settle(result, None)  # gone already: notifyFinish would never fire
        else:
            # The relay notes the stream's usage on the request as it passes.
            request.notifyFinish().addBoth(lambda _: acct.settle(result, request.usage))
        return result

    try:
        d = gateway.router.route(alias, call)
    except StoreUnavailable as e:
        acct.settle(None, None, served=False, status=503)
        return fail(_store_down(e))
    return d.addBoth(settle)


def admitted_route(
    gateway: LimitedGateway, request: GatewayRequest, alias: str, call: ProviderRequest
) -> Deferred[RouteResult]:
    """:meth:`Router.route` behind the caller's key limits: fires with the
    :class:`RouteResult` or fails with :class:`RouteError` (429 over a limit or budget,
    503 when a closed state store is down). Cancelling it cancels the routing."""
    caller = request.caller
    key = None if caller is None else caller.key
    acct = Accounting(gateway, request, alias, call.body)
    if key is None:  # no key limits to wait for: no coroutine layer either
        return _routed(gateway, request, alias, call, acct)
    return Deferred.fromCoroutine(_admitted_key(gateway, request, alias, call, acct, key))
