"""The Overview's data: every alias and deployment with its live state, and the last
hour's chart. Built per poll from the router's health and the request log's live numbers
(this process's: with ``--workers`` each worker counts what it served)."""

from __future__ import annotations

import time
from typing import Any

from gatewayd.requestlog import RequestLog
from gatewayd.routing import Router

#: Minutes the per-deployment numbers cover.
RECENT_MINUTES = 5


def overview(router: Router, request_log: RequestLog) -> dict[str, Any]:
    """The ``/ui/api/overview`` answer (no secrets: ids, providers, models, numbers)."""
    table = router.table
    health = router.health
    now = health.now()
    wall = time.time()
    minute = int(wall // 60)
    stats = request_log.stats
    aliases = []
    for alias, routes in table.routes.items():
        deployments = []
        for route in routes:
            d = route.deployment
            h = health.get(route.id)
            cooling = h.cooling(now)
            # A cooldown a failed active health check started (gatewayd.fleet): "down".
            probed = (h.last_error or "").startswith("health check")
            series = stats.deployments.get((alias, route.id))
            recent = (
                series.summary(minute, RECENT_MINUTES)
                if series is not None
                else {"requests": 0, "error_rate": 0.0, "latency_ms": None, "ttft_ms": None}
            )
            deployments.append(
                {
                    "id": route.id,
                    "provider": d.provider.prefix,
                    "model": d.model,
                    "state": ("down" if probed else "cooldown") if cooling else "healthy",
                    "cooldown_until": round(wall + (h.cooldown_until - now), 3)
                    if cooling
                    else None,
                    "cooldown_remaining_s": round(max(0.0, h.cooldown_until - now), 3),
                    "in_flight": h.in_flight,
                    "consecutive_fails": h.consecutive_fails,
                    "successes": h.successes,
                    "failures": h.failures,
                    "last_error_status": h.last_error_status,
                    # An upstream's words may echo a key: redacted like stored bodies.
                    "last_error": None
                    if h.last_error is None
                    else request_log.redactor.text(h.last_error),
                    **recent,
                }
            )
        aliases.append(
            {
                "alias": alias,
                "fallbacks": list(table.fallbacks_for(alias)),
                "deployments": deployments,
            }
        )
    return {
        "time": round(wall, 3),
        "window_minutes": RECENT_MINUTES,
        "aliases": aliases,
        "totals": stats.total.summary(minute, RECENT_MINUTES),
        "chart": stats.total.chart(minute),
        "request_log": {
            "kind": "memory" if request_log.settings.path is None else "sqlite",
            "store_bodies": request_log.store_bodies,
        },
    }
