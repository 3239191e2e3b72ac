"""GET /health (and /health/liveliness, /liveness, /readiness) and GET /metrics.

Both are scraped every few seconds, while the gateway is busy, and grow with the number of
deployments: neither may build per-deployment Python objects it does not need. ``/health``
writes its JSON from text prepared once per routing table (aliases, deployment ids,
providers, models, fallbacks), with only the health numbers formatted per scrape;
``/metrics`` renders from caches (:mod:`gatewayd.observability.metric_store`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from gatewayd.limits import store_health
from gatewayd.observability.log import get_logger
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.latency import PER_TOKEN, TTFB, LatencyBook
from gatewayd.routing.table import RoutingTable
from gatewayd.web.auth import authenticate, is_authorized
from gatewayd.web.errors import write_error
from gatewayd.web.exchange import Gateway
from gatewayd.web.resource_kinds import JSONResource

log = get_logger(__name__)

_ALIVE = json.dumps({"status": "alive"}).encode()
_NOT_READY = json.dumps({"status": "not ready"}).encode()


def _send(request: Request, body: bytes, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return body


class Liveness(JSONResource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def render_GET(self, request: Request) -> bytes:
        return _send(request, _ALIVE)


class Readiness(JSONResource):
    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render_GET(self, request: Request) -> bytes:
        if not self.gateway.ready:
            return _send(request, _NOT_READY, 503)
        models = len(self.gateway.router.table.routes)
        return _send(request, b'{"status": "ready", "models": %d}' % models)


def _number(x: float) -> str:
    return repr(x) if math.isfinite(x) else json.dumps(x)


def _maybe(x: float | None) -> str:
    return "null" if x is None else _number(round(x, 6))


def _no_estimate(deployment_id: str, kind: str) -> float | None:
    return None


class HealthLayout:
    """The JSON of ``/health`` that only changes with the routing table, in pieces.

    ``aliases`` holds, per alias, the text before its deployments, each deployment's
    opening (``{"id": ..., "provider": ..., "model": ..., ``) with its id, and the text
    after them (its fallbacks). The result is what ``json.dumps`` writes for the same
    document (same key order and separators)."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.aliases: list[tuple[str, list[tuple[str, str]], str]] = []
        for alias, routes in table.routes.items():
            head = json.dumps(alias) + ': {"deployments": ['
            deps = []
            for route in routes:
                d = route.deployment
                opening = json.dumps({"id": d.id, "provider": d.provider.prefix, "model": d.model})
                deps.append((opening[:-1] + ", ", d.id))
            tail = '], "fallbacks": ' + json.dumps(list(table.fallbacks_for(alias))) + "}"
            self.aliases.append((head, deps, tail))

    def models(self, health: Cooldowns, latency: LatencyBook | None = None) -> tuple[str, int]:
        """The ``models`` object's text and how many deployments are healthy; with
        ``latency``, each deployment's latency estimates (null when there is none)."""
        now = health.now()
        raw = latency.raw if latency is not None else _no_estimate
        states, get = health.states, health.get
        healthy = 0
        parts = []
        for head, deps, tail in self.aliases:
            texts = []
            for opening, dep_id in deps:
                h = states.get(dep_id) or get(dep_id)
                cooling = now < h.cooldown_until
                healthy += not cooling
                error = "null" if h.last_error is None else json.dumps(h.last_error)
                status = "null" if h.last_error_status is None else str(h.last_error_status)
                texts.append(
                    f'{opening}"state": "{"cooldown" if cooling else "healthy"}", '
                    f'"cooldown_remaining_s": '
                    f"{_number(round(max(0.0, h.cooldown_until - now), 3))}, "
                    f'"consecutive_fails": {h.consecutive_fails}, "in_flight": {h.in_flight}, '
                    f'"successes": {h.successes}, "failures": {h.failures}, '
                    f'"last_error": {error}, "last_error_status": {status}, '
                    f'"latency_ttfb_s": {_maybe(raw(dep_id, TTFB))}, '
                    f'"latency_per_token_s": {_maybe(raw(dep_id, PER_TOKEN))}}}'
                )
            parts.append(head + ", ".join(texts) + tail)
        return "{" + ", ".join(parts) + "}", healthy


class Health(JSONResource):
    """GET /health: each alias, its deployments and their state. No secrets."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway
        self._layout: HealthLayout | None = None

    def layout(self) -> HealthLayout:
        """The current table's layout, built once per table (a reload swaps the table)."""
        table = self.gateway.router.table
        if self._layout is None or self._layout.table is not table:
            self._layout = HealthLayout(table)
        return self._layout

    def render_GET(self, request: Request) -> bytes:
        router = self.gateway.router
        models, healthy = self.layout().models(router.health, router.latency)
        status = "healthy" if healthy else "unhealthy"
        ready = "true" if self.gateway.ready else "false"
        store: Any = store_health(self.gateway.limiter)
        body = (
            f'{{"status": "{status}", "ready": {ready}, "models": {models}, '
            f'"state_store": {json.dumps(store)}}}'
        )
        return _send(request, body.encode())


class Metrics(JSONResource):
    """GET /metrics: Prometheus text format (OpenMetrics when asked); open unless
    ``require_auth_for_metrics_endpoint`` is set."""

    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render_GET(self, request: Request) -> bytes | int:
        config = self.gateway.router.table.config
        general = config.general
        if general.require_auth_for_metrics_endpoint and not (
            # The master key; with none set, any client key (with neither, it is open).
            is_authorized(request, general.master_key)
            if general.master_key is not None
            else authenticate(request, config) is not None
        ):
            return write_error(
                request,
                401,
                "metrics require the master key",
                "authentication_error",
                "invalid_api_key",
            )
        header = request.getHeader(b"accept")
        accept = header.decode("latin-1") if header else None
        try:  # with workers, the sum over their files, merged here (milliseconds)
            pieces, ctype = self.gateway.metrics.pieces(accept)
        except Exception:
            log.failure("rendering /metrics failed")
            return write_error(request, 500, "metrics unavailable", "api_error")
        request.setHeader(b"content-type", ctype.encode())
        # Written in pieces, with the length known: a 3 MB body is not copied whole.
        request.setHeader(b"content-length", b"%d" % sum(map(len, pieces)))
        for piece in pieces:
            request.write(piece)
        request.finish()
        return NOT_DONE_YET
