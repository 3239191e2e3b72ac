"""The request log stage: outermost, it sees every routed request's outcome and turns
it into one row (and the Overview's live numbers). Its ``after`` runs last, when the
answer is complete (a stream: when relayed to its end), so the limits stage has already
counted the cost; building the row is a tuple and a ``put_nowait``."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from gatewayd.requestlog.attempts import AttemptRecorder, recording
from gatewayd.requestlog.redact import MAX_BODY
from gatewayd.routing import RouteError, RouteResult
from gatewayd.stages.base import RouteContext
from gatewayd.stages.limits import LimitsStage
from gatewayd.state import StoreUnavailable

if TYPE_CHECKING:
    from gatewayd.requestlog import RequestLog


class BodyTap:
    """Keeps the first :data:`MAX_BODY` bytes of a stream (``store_bodies`` only)."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def event(self, data: bytes) -> None:
        if self.size < MAX_BODY:
            self.chunks.append(data)
            self.size += len(data)

    def end(self, complete: bool) -> None:
        """Nothing to do: read in the stage's ``after``."""

    def text(self) -> bytes:
        return b"".join(self.chunks)[:MAX_BODY]


def _tokens(usage: Any) -> tuple[int | None, int | None]:
    if not isinstance(usage, dict):
        return None, None
    p = usage.get("prompt_tokens", usage.get("input_tokens"))
    c = usage.get("completion_tokens", usage.get("output_tokens"))
    return (p if isinstance(p, int) else None), (c if isinstance(c, int) else None)


class RequestLogStage:
    """One row per routed request into ``log`` (see the module docstring)."""

    def __init__(self, log: RequestLog) -> None:
        self.log = log

    def before(self, ctx: RouteContext) -> None:
        ctx.call, ctx.scratch[AttemptRecorder] = recording(ctx.call)
        if self.log.store_bodies:
            tap = BodyTap()
            ctx.scratch[RequestLogStage] = tap
            ctx.taps.append(tap)

    def after(self, ctx: RouteContext, result: RouteResult | None, failure: Failure | None) -> None:
        r: Any = ctx.request
        now = time.time()
        latency_ms = (time.monotonic() - r.started) * 1000.0
        error: str | None = None
        usage: Any = None
        if result is not None:
            status = result.response.status
            deployment: str | None = result.deployment
            attempts, fallback = result.attempts, result.fallback
            stream = result.response.stream is not None
            usage = r.usage if stream else result.response.usage
            if failure is not None:  # the stream broke after it started
                error = f"stream failed: {failure.getErrorMessage()}"
        else:
            stream = False
            e = None if failure is None else failure.value
            deployment, attempts, fallback = r.deployment, getattr(r, "attempts", 0), None
            if isinstance(e, RouteError):
                status, attempts = e.status, e.attempts
                deployment = e.deployment or deployment
                # An upstream's words may echo a key: redacted like stored bodies.
                error = self.log.redactor.text(str(e.error.get("message", ""))[:1000])
            elif isinstance(e, StoreUnavailable):
                status, error = 503, "state store unavailable"
            else:
                status, error = 499, "client went away" if e is not None else None
        ttfb = getattr(r, "ttfb", None)
        ttft_ms = ttfb * 1000.0 if stream and ttfb is not None else None
        prompt, completion = _tokens(usage)
        acct = ctx.scratch.get(LimitsStage)
        cost = acct.usd if acct is not None else 0.0
        alias = result.alias if result is not None else ctx.alias
        dialect = getattr(r, "dialect", "chat")
        notes = ctx.scratch[AttemptRecorder].notes  # the failed attempts
        attempt_log = None
        if notes:
            # Failed attempts before it (or instead): worth their own record; a single
            # clean attempt is the row itself. An upstream's words may echo a key.
            redact = self.log.redactor.text
            entries: list[tuple[Any, ...]] = [(d, s, ms, redact(e)) for d, s, ms, e in notes]
            if result is not None:
                entries.append(
                    (
                        result.deployment,
                        result.response.status,
                        round(result.upstream_seconds * 1000.0, 1),
                        None,
                    )
                )
            attempt_log = json.dumps(entries)
        req_body = resp_body = None
        if self.log.store_bodies:
            redactor = self.log.redactor
            req_body = redactor.body(ctx.call.body)
            tap = ctx.scratch.get(RequestLogStage)
            if stream and tap is not None:
                resp_body = redactor.body(tap.text())
            elif result is not None:
                resp_body = redactor.body(result.response.body)
        self.log.add(
            (
                now,
                getattr(r, "request_id", None) or None,
                r.key_name,
                alias,
                deployment,
                dialect,
                getattr(r, "endpoint", None) or dialect,
                status,
                attempts,
                fallback,
                round(latency_ms, 1),
                None if ttft_ms is None else round(ttft_ms, 1),
                prompt,
                completion,
                cost,
                1 if ctx.cached else 0,
                1 if stream else 0,
                error,
                attempt_log,
                req_body,
                resp_body,
            ),
            alias,
            deployment,
            status,
            latency_ms,
            ttft_ms,
        )
