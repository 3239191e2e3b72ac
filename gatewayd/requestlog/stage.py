"""The request-log stage: outermost, so that its ``after`` sees every routed request's
outcome (an answer, a refusal by an inner stage, every attempt failing). Requests
refused before routing (401, 404, a bad body) never reach the stages: the access line
writes their row (:func:`unrouted_row`), and skips the ones this stage marked."""

from __future__ import annotations

import time
from typing import Any

from twisted.python.failure import Failure

from gatewayd.limits import cost
from gatewayd.requestlog.attempts import AttemptRecorder
from gatewayd.requestlog.bodies import StreamCopy, body_text
from gatewayd.requestlog.log import RequestLog
from gatewayd.requestlog.row import RequestRow
from gatewayd.routing import RouteError, RouteResult
from gatewayd.routing.table import RoutingTable
from gatewayd.stages.base import RouteContext
from gatewayd.tracing.request_trace import trace_of
from gatewayd.upstream.redact import Redactor


def _prices(table: RoutingTable, alias: str, deployment: str | None) -> tuple[float, float]:
    for r in table.routes.get(alias, ()):
        if r.id == deployment:
            return r.deployment.input_cost_per_token, r.deployment.output_cost_per_token
    return 0.0, 0.0


def _tokens(usage: Any) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, 0
    p = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    c = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return (p if isinstance(p, int) else 0), (c if isinstance(c, int) else 0)


def _secrets(table: RoutingTable) -> Redactor:
    """Every secret the config holds in clear: the master key, upstream keys and headers."""
    config = table.config
    found: list[str | None] = [config.general.master_key]
    for d in config.deployments:
        found.append(getattr(d, "api_key", None))
        found.extend(getattr(d, "headers", {}).values())
    return Redactor(found)


class RequestLogStage:
    """Writes one row per routed request when it is complete."""

    def __init__(self) -> None:
        self._redactor: tuple[Any, Redactor] | None = None

    def redactor(self, table: RoutingTable) -> Redactor:
        if self._redactor is None or self._redactor[0] is not table:
            self._redactor = (table, _secrets(table))
        return self._redactor[1]

    def before(self, ctx: RouteContext) -> None:
        rlog: RequestLog | None = getattr(ctx.gateway, "request_log", None)
        if rlog is None:
            return None
        ctx.request.request_logged = True  # type: ignore[attr-defined]
        call = ctx.call
        # Every attempt goes through the call's trace: wrapped, it notes each one. Set
        # in place (not dataclasses.replace: 4 µs a request): the call is this request's
        # own, made for it by the handler, and no stage reads its trace.
        recorder = AttemptRecorder(trace_of(call))
        object.__setattr__(call, "trace", recorder)
        body = copy = None
        if rlog.store_bodies:
            body = body_text(call.body, self.redactor(ctx.gateway.router.table))
            copy = StreamCopy() if call.stream else None
            if copy is not None:
                ctx.taps.append(copy)
        ctx.scratch[RequestLogStage] = (recorder, body, copy)
        return None

    def after(self, ctx: RouteContext, result: RouteResult | None, failure: Failure | None) -> None:
        rlog: RequestLog | None = getattr(ctx.gateway, "request_log", None)
        if rlog is None:
            return
        r: Any = ctx.request
        table = ctx.gateway.router.table
        deployment = r.deployment
        attempts = r.attempts
        fallback = r.fallback
        stream = False
        usage: Any = None
        if result is not None:
            status = result.response.status
            deployment = result.deployment
            attempts = result.attempts
            fallback = result.fallback
            stream = result.response.stream is not None
            usage = r.usage if stream else result.response.usage
            if failure is not None:  # a stream that broke off after it started
                status = r.code if r.code >= 400 else 502
        else:
            e = failure.value if failure is not None else None
            status = e.status if isinstance(e, RouteError) else 499
            if isinstance(e, RouteError):
                attempts = e.attempts
                deployment = e.deployment or deployment
        cached = ctx.cached
        prompt, completion = (0, 0) if cached or usage is None else _tokens(usage)
        usd = 0.0
        if result is not None and (prompt or completion):
            usd = cost(prompt, completion, *_prices(table, result.alias, deployment))
        started = r.started
        now = time.monotonic()
        ttft = r.ttfb if stream else None
        # Positional, in the field order, unrounded (the pages round): once per request.
        row = RequestRow(
            time.time() - (now - started),
            r.request_id,
            r.key_name,
            ctx.alias,
            deployment,
            r.dialect,
            r.path.decode("utf-8", "replace"),
            status,
            attempts,
            fallback,
            (now - started) * 1000.0,
            None if ttft is None else ttft * 1000.0,
            prompt,
            completion,
            usd,
            cached,
            stream,
            r.outcome,
        )
        kept = ctx.scratch.pop(RequestLogStage, None)
        if kept is None:  # the log was started by a reload while this request ran
            return
        recorder, body, copy = kept
        if recorder.attempts:
            row.attempt_log = recorder.attempts
        if body is not None:
            redactor = self.redactor(table)
            row.request_body = body
            if copy is not None:
                row.response_body = copy.text(redactor)
            elif result is not None and result.response.body is not None:
                row.response_body = body_text(result.response.body, redactor)
            elif failure is not None and isinstance(failure.value, RouteError):
                row.response_body = body_text(failure.value.error, redactor)
        rlog.add(row)


def unrouted_row(request: Any, status: int) -> RequestRow:
    """The row of a request that never reached the stages (the access line calls it)."""
    started = request.started
    return RequestRow(
        ts=time.time() - (time.monotonic() - started),
        request_id=request.request_id,
        key=request.key_name,
        alias=request.alias,
        deployment=request.deployment,
        dialect=request.dialect,
        endpoint=(getattr(request, "path", None) or b"").decode("utf-8", "replace"),
        status=status,
        attempts=request.attempts,
        fallback=request.fallback,
        latency_ms=round((time.monotonic() - started) * 1000.0, 2),
        ttft_ms=None,
        prompt_tokens=0,
        completion_tokens=0,
        cost_usd=0.0,
        cached=False,
        stream=False,
        outcome=request.outcome,
    )
