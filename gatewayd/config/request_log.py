"""``general_settings.request_log`` (the console's request log) and ``general_settings.ui``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.values import ValueReader

REQUEST_LOG_KEYS = {"path", "retention_days", "max_rows", "store_bodies", "ring_size", "queue_size"}


@dataclass(frozen=True)
class RequestLogSettings:
    """Where the request log lives and how much of it is kept."""

    #: The SQLite file (WAL); None: a bounded in-memory ring of ``ring_size`` rows.
    path: str | None = None
    #: Rows older than this are deleted in the background; 0: kept by age forever.
    retention_days: float = 30.0
    #: At most this many rows (the oldest go first); 0: no cap.
    max_rows: int = 1_000_000
    #: Keep request and response bodies (secrets redacted); off by default.
    store_bodies: bool = False
    #: Rows the in-memory ring keeps when there is no path.
    ring_size: int = 10_000
    #: Rows waiting for the writer thread; past it rows are dropped and counted.
    queue_size: int = 10_000


def request_log_settings(reader: ValueReader, raw: Any, path: str) -> RequestLogSettings:
    """The ``request_log`` mapping, checked (absent: the in-memory ring)."""
    if raw is None:
        return RequestLogSettings()
    d = reader._mapping(raw, path)
    reader._unknown(d, REQUEST_LOG_KEYS, path)
    where = reader._str(d, "path", path)
    if where is not None and not where.strip():
        raise ConfigError(f"{path}.path", "must be a file path (or leave it out for memory)")
    return RequestLogSettings(
        path=where,
        retention_days=reader._float(d, "retention_days", path, 30.0),
        max_rows=reader._int(d, "max_rows", path, 1_000_000, 0),
        store_bodies=reader._bool(d, "store_bodies", path, False),
        ring_size=reader._int(d, "ring_size", path, 10_000, 1),
        queue_size=reader._int(d, "queue_size", path, 10_000, 1),
    )


def ui_enabled(reader: ValueReader, g: Any, path: str, master_key: str | None) -> bool:
    """``ui``: on by default when a ``master_key`` is set."""
    return reader._bool(g, "ui", path, master_key is not None)
