"""The access log: one line per request, and the request metrics counted with it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import Logger, LogLevel

from gatewayd.config.model import GeneralSettings
from gatewayd.observability.log import emit_text
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.requestlog import RequestLog, unrouted_row
from gatewayd.tracing.request_trace import NOOP_TRACE, RequestSummary, RequestTrace


class LoggedSite(Protocol):
    """What the line needs of the site (:class:`gatewayd.web.request.GatewaySite`)."""

    metrics: GatewayMetrics
    settings: Callable[[], GeneralSettings]
    request_log: RequestLog | None


class LoggedRequest(Protocol):
    """What the line reads of a finished request (:class:`gatewayd.web.request.GatewayRequest`)."""

    logged: bool
    request_logged: bool
    started: float
    alias: str | None
    deployment: str | None
    dialect: str
    endpoint: str | None
    key_name: str | None
    upstream_seconds: float | None
    trace: RequestTrace
    attempts: int
    fallback: str | None
    hedge: str | None
    outcome: str | None
    cached: bool
    ttfb: float | None
    request_id: str
    method: bytes
    uri: bytes

    def getClientAddress(self) -> Any: ...


access_log = Logger(namespace="gatewayd.access")
#: Paths kept out of the request log: the console itself (and its browser's favicon), health checks, scrapes.
_NOT_LOGGED = (b"/ui", b"/health", b"/metrics", b"/favicon.ico")
#: Which successful requests get an access line under ``access_log_sample_rate``.
_sampler = random.Random()


def access_line(site: LoggedSite, request: LoggedRequest, status: int, sent: int) -> None:
    """``request``'s one access-log line (and its metrics), once."""
    if request.logged:
        return
    request.logged = True
    latency = time.monotonic() - request.started
    if request.alias is not None:
        site.metrics.requests.inc(
            request.alias, request.deployment or "-", str(status), request.dialect
        )
        site.metrics.endpoint_requests.inc(
            request.alias, request.endpoint or request.dialect, str(status)
        )
        if request.key_name is not None:
            site.metrics.key_requests.inc(request.key_name, request.alias, str(status))
        if request.upstream_seconds is not None:
            site.metrics.overhead.observe(max(0.0, latency - request.upstream_seconds))
    if (
        site.request_log is not None
        and not request.request_logged
        and not request.uri.startswith(_NOT_LOGGED)
    ):
        # Refused before routing (401, 404, a bad body): no stage saw it.
        site.request_log.add(unrouted_row(request, status))
    if request.trace is not NOOP_TRACE:
        request.trace.finish(
            RequestSummary(
                status,
                request.alias,
                request.deployment,
                request.attempts,
                request.fallback,
                request.outcome,
            )
        )
    g = site.settings()
    if not g.access_log or (
        g.access_log_sample_rate < 1.0
        and status < 400
        and request.outcome is None
        and _sampler.random() >= g.access_log_sample_rate
    ):
        return  # counted above; no line (errors always get one when sampling)
    ttfb = request.ttfb
    client = getattr(request.getClientAddress(), "host", "-")
    method = request.method.decode("ascii", "replace")
    path = request.uri.decode("utf-8", "replace").split("?", 1)[0]
    alias = request.alias or "-"
    deployment = request.deployment or "-"
    fallback = request.fallback or "-"
    latency_ms = round(latency * 1000.0, 1)
    ttfb_ms = None if ttfb is None else round(ttfb * 1000.0, 1)
    outcome = request.outcome
    rid = request.request_id or "-"
    key = request.key_name
    dialect = request.dialect
    # Built here, not through twisted.logger's str.format of a template: the line
    # is the same, at a fraction of the cost (one per request).
    text = (
        f'{client} "{method} {path}" {status} alias={alias} deployment={deployment} '
        f"attempts={request.attempts} fallback={fallback} latency_ms={latency_ms:.1f} "
        f"ttfb_ms={'-' if ttfb is None else f'{ttfb * 1000.0:.1f}'} bytes={sent} "
        f"dialect={dialect}{f' key={key}' if key else ''}"
        f"{f' hedge={request.hedge}' if request.hedge else ''}"
        f"{f' outcome={outcome}' if outcome else ''}{' cached=true' if request.cached else ''}"
        f" request_id={rid}"
    )
    emit_text(
        access_log,
        LogLevel.info,
        text,
        {
            "client": client,
            "method": method,
            "path": path,
            "status": status,
            "alias": alias,
            "deployment": deployment,
            "attempts": request.attempts,
            "fallback": fallback,
            "latency_ms": latency_ms,
            "ttfb_ms": ttfb_ms,
            "bytes": sent,
            "dialect": dialect,
            "outcome": outcome,
            "hedge": request.hedge,
            "cached": request.cached,
            "request_id": rid,
            "key": key,
        },
    )
