"""The limits stage: the key's limits and budget before routing (the deployments'
are checked by the router at pick time), and the settling of every reservation with
the real usage once the answer is complete; spend and the usage log with it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gatewayd.limits import Estimate, LimitExceeded, Spent, Ticket, cost, estimate
from gatewayd.limits.media_cost import unit_cost
from gatewayd.limits.usagelog import UsageRecord
from gatewayd.observability.log import get_logger
from gatewayd.providers.base import ProviderRequest, openai_error
from gatewayd.routing import RouteError, RouteResult
from gatewayd.routing.table import RoutingTable
from gatewayd.stages.base import ClientRequest, RouteContext, StagedGateway
from gatewayd.stages.route import store_down
from gatewayd.state import StoreUnavailable

log = get_logger(__name__)


#: A deployment's USD per token: input, output, cache read, cache write (None: input).
Prices = tuple[float, float, float | None, float | None]


def _prices(table: RoutingTable, alias: str, deployment: str | None) -> Prices:
    """The answering deployment's prices; with no deployment yet, the alias's dearest
    (an estimate has no cached tokens: the cache prices do not matter then)."""
    routes = table.routes.get(alias, ())
    for r in routes:
        if r.id == deployment:
            d = r.deployment
            return (
                d.input_cost_per_token,
                d.output_cost_per_token,
                d.cache_read_input_token_cost,
                d.cache_creation_input_token_cost,
            )
    if not routes:
        return 0.0, 0.0, None, None
    return (
        max(r.deployment.input_cost_per_token for r in routes),
        max(r.deployment.output_cost_per_token for r in routes),
        None,
        None,
    )


def _usd(spent: Spent, prices: Prices) -> float:
    price_in, price_out, price_read, price_write = prices
    return cost(
        spent.prompt,
        spent.completion,
        price_in,
        price_out,
        spent.cache_read,
        spent.cache_write,
        price_read,
        price_write,
    )


class Accounting:
    """Settles one request's reservations once, and counts its spend."""

    def __init__(
        self, gateway: StagedGateway, request: ClientRequest, alias: str, body: dict[str, Any]
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.alias = alias
        self.body = body
        self._estimate: Estimate | None = None
        self.tickets: list[Ticket] = []
        self.done = False
        #: The upstream call, for the prices that are not per token.
        self.call: ProviderRequest | None = None

    @staticmethod
    def _unit_cost(table: RoutingTable, result: RouteResult, call: ProviderRequest) -> float:
        for r in table.routes.get(result.alias, ()):
            if r.id == result.deployment:
                return unit_cost(r.deployment, call, result.response)
        return 0.0

    @property
    def estimate(self) -> Estimate:
        # Computed only when needed: a key's reservation, or a stream without usage.
        if self._estimate is None:
            self._estimate = estimate(self.body)
        return self._estimate

    def settle(
        self,
        result: RouteResult | None,
        usage: Any,
        served: bool = True,
        status: int = 0,
        free: bool = False,
    ) -> None:
        """Once: count the spend and give back or settle every reservation. ``free``:
        answered without an upstream call (a cache hit): no spend, no tokens."""
        if self.done:
            return
        self.done = True
        spent: Spent | None = Spent(0, 0) if free else Spent.from_usage(usage)
        usd = 0.0
        table = self.gateway.router.table
        counted = Spent(0, 0)
        if result is not None:
            # No usage reported (a stream without include_usage): the reservation stands.
            counted = spent or Spent(self.estimate.prompt, self.estimate.completion)
            usd = _usd(counted, _prices(table, result.alias, result.deployment))
            if not free and self.call is not None:  # per request, second, character, image
                usd += self._unit_cost(table, result, self.call)
            key = self.request.key_name or "-"
            m = self.gateway.metrics
            if usd:
                m.spend.inc(key, result.alias, result.deployment, amount=usd)
            for kind, n in (("prompt", counted.prompt), ("completion", counted.completion)):
                if n:
                    m.key_tokens.inc(key, result.alias, kind, amount=n)
        self._log(result, counted, usd, status, free)
        for t in self.tickets:
            if result is not None and spent is None and not free:
                t.settle(Spent(self.estimate.prompt, self.estimate.completion), usd)
            else:
                t.settle(spent, usd, served)

    def _log(
        self, result: RouteResult | None, spent: Spent, usd: float, status: int, cached: bool
    ) -> None:
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
            cached=cached,
            prompt_cache_read_tokens=spent.cache_read,
            prompt_cache_write_tokens=spent.cache_write,
        )
        usage_log.write(record, time.time())


def at_limit(headers: tuple[tuple[bytes, bytes], ...]) -> bool:
    """Whether this request took the last of one of the key's minute limits."""
    return any(n.startswith(b"x-ratelimit-remaining-") and v == b"0" for n, v in headers)


class LimitsStage:
    """The key's limits before routing; every reservation settled after it."""

    def before(self, ctx: RouteContext) -> Deferred[RouteResult | None] | None:
        acct = Accounting(ctx.gateway, ctx.request, ctx.alias, ctx.call.body)
        acct.call = ctx.call
        ctx.scratch[LimitsStage] = acct
        caller = ctx.request.caller
        key = None if caller is None else caller.key
        if key is None:  # no key limits to wait for: no coroutine layer either
            return None
        return Deferred.fromCoroutine(self._admit(ctx, acct, key))

    async def _admit(self, ctx: RouteContext, acct: Accounting, key: Any) -> None:
        gateway = ctx.gateway
        ctx.request.setHeader(b"x-gatewayd-key", key.name.encode())  # the name, never the key
        if ctx.cached:  # answered from the cache: no tokens, no budget, no spend
            if key.rpm is None and key.max_parallel_requests is None:
                return  # nothing else to take
            est, usd = Estimate(0, 0), 0.0
        else:
            est = acct.estimate
            usd = _usd(
                Spent(est.prompt, est.completion), _prices(gateway.router.table, ctx.alias, None)
            )
        try:
            ticket = await gateway.limiter.admit_key(key, est, usd, tokens=not ctx.cached)
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
            raise store_down(e) from None
        acct.tickets.append(ticket)
        for name, value in ticket.headers:
            ctx.request.setHeader(name, value)
        if at_limit(ticket.headers):  # a hedged copy would cost what the key has not got
            ctx.call = replace(ctx.call, hedge=False)

    def after(self, ctx: RouteContext, result: RouteResult | None, failure: Failure | None) -> None:
        acct: Accounting = ctx.scratch.pop(LimitsStage)
        if result is None:
            e = failure.value if failure is not None else None
            if isinstance(e, RouteError):
                acct.settle(None, None, served=e.attempts > 0, status=e.status)
            elif isinstance(e, StoreUnavailable):
                acct.settle(None, None, served=False, status=503)
            else:
                acct.settle(None, None, status=499)
            return
        acct.tickets += result.tickets
        usage = result.response.usage if result.response.stream is None else ctx.request.usage
        acct.settle(result, usage, free=ctx.cached)
