"""The request log: one row per routed request, for the operator console (``/ui``).

:class:`RequestLog` holds where rows go (:class:`~gatewayd.requestlog.sqlite_log.SQLiteLog`
with ``general_settings.request_log.path``, else a
:class:`~gatewayd.requestlog.ring.MemoryLog`), the Overview's live numbers
(:class:`~gatewayd.requestlog.stats.LiveStats`) and the stage that feeds them
(:class:`~gatewayd.requestlog.stage.RequestLogStage`). A request never waits on it and
never fails because of it.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred

from gatewayd.config.model import GatewayConfig
from gatewayd.config.request_log import RequestLogSettings
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.requestlog.redact import Redactor
from gatewayd.requestlog.ring import MemoryLog
from gatewayd.requestlog.row import Page, Query, Row, SpendByDay
from gatewayd.requestlog.sqlite_log import SQLiteLog
from gatewayd.requestlog.stage import RequestLogStage
from gatewayd.requestlog.stats import LiveStats

__all__ = ["Page", "Query", "RequestLog", "RequestLogStage", "config_secrets"]


def config_secrets(config: GatewayConfig) -> list[str]:
    """The secrets ``config`` holds in clear (redacted from stored bodies)."""
    out = [d.api_key for d in config.deployments if getattr(d, "api_key", None)]
    if config.general.master_key:
        out.append(config.general.master_key)
    return [s for s in out if isinstance(s, str)]


class RequestLog:
    """Where rows go and what the console reads (see the module docstring)."""

    def __init__(
        self,
        settings: RequestLogSettings,
        reactor: Any,
        metrics: GatewayMetrics,
        secrets: list[str] | None = None,
        queue_size: int = 50_000,
    ) -> None:
        self.settings = settings
        self.store_bodies = settings.store_bodies
        self.redactor = Redactor(secrets or ())
        self.stats = LiveStats()
        self.metrics = metrics
        self.sink: MemoryLog | SQLiteLog
        if settings.path is None:
            self.sink = MemoryLog(settings.ring_size)
        else:
            self.sink = SQLiteLog(
                settings.path,
                reactor,
                self._dropped,
                settings.retention_days,
                settings.max_rows,
                queue_size,
            )
        self.stage = RequestLogStage(self)
        self._add = self.sink.add
        self._stats_add = self.stats.add

    def reloaded(self, config: GatewayConfig) -> None:
        """A reload: the new config's secrets are the ones to redact."""
        self.redactor = Redactor(config_secrets(config))

    def _dropped(self, reason: str, n: int) -> None:
        self.metrics.request_log_dropped.inc(reason, amount=n)

    def add(
        self,
        row: Row,
        alias: str,
        deployment: str | None,
        status: int,
        latency_ms: float,
        ttft_ms: float | None,
    ) -> None:
        """Store ``row`` (or drop and count it) and count it in the live numbers."""
        self._add(row)
        self._stats_add(row[0], alias, deployment, status, latency_ms, ttft_ms)

    def query(self, q: Query) -> Deferred[Page]:
        """Fires with a page of rows, newest first."""
        return self.sink.query(q)

    def get(self, row_id: int) -> Deferred[dict[str, Any] | None]:
        """Fires with one row and its bodies, or None."""
        return self.sink.get(row_id)

    def spend_by_day(self, days: int) -> Deferred[SpendByDay]:
        """Fires with each key's cost and requests per UTC day over the last ``days``."""
        today = int(time.time() // 86400)
        return self.sink.spend_by_day((today - days + 1) * 86400.0)

    def start(self) -> None:
        self.sink.start()

    def stop(self) -> Deferred[None]:
        """Fires once queued rows are written (bounded)."""
        return self.sink.stop()
