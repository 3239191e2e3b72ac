"""The request log: :class:`RequestLog` keeps one row per request (SQLite, or the
in-memory ring) and the Overview's live numbers. Rows come from the request-log stage
(routed requests) and from the access line (requests refused before routing)."""

from __future__ import annotations

from typing import Any

from gatewayd.config.request_log import RequestLogSettings
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.requestlog.ring import RingLog
from gatewayd.requestlog.row import RequestRow
from gatewayd.requestlog.sqlite_store import SQLiteLog
from gatewayd.requestlog.stats import LiveStats


class RequestLog:
    """One row per request; queried by the console (see ``store``'s methods)."""

    def __init__(self, settings: RequestLogSettings, reactor: Any, metrics: GatewayMetrics) -> None:
        self.reactor = reactor
        self.metrics = metrics
        self.stats = LiveStats()
        self.settings = settings
        self.store: SQLiteLog | RingLog = self._open(settings)

    def _open(self, s: RequestLogSettings) -> SQLiteLog | RingLog:
        if s.path is None:
            return RingLog(s.ring_size)
        return SQLiteLog(
            s.path, self.reactor, self._dropped, s.queue_size, s.retention_days, s.max_rows
        )

    def _dropped(self, reason: str, n: int) -> None:
        self.metrics.request_log_dropped.inc(reason, amount=n)

    @property
    def store_bodies(self) -> bool:
        return self.settings.store_bodies

    def add(self, row: RequestRow) -> None:
        """Called once per request, in the reactor's thread: never blocks, never raises
        for a disk problem (the SQLite store drops and counts instead)."""
        self.stats.add(row)
        self.store.add(row)

    def configure(self, settings: RequestLogSettings) -> None:
        """On reload: a new path (or ring size) opens a new store; retention applies."""
        old = self.settings
        self.settings = settings
        if (old.path, old.ring_size, old.queue_size) != (
            settings.path,
            settings.ring_size,
            settings.queue_size,
        ):
            self.store.close()
            self.store = self._open(settings)
        elif isinstance(self.store, SQLiteLog):
            self.store.retention_days = settings.retention_days
            self.store.max_rows = settings.max_rows

    def close(self) -> None:
        self.store.close()
