"""``general_settings.request_log`` and ``general_settings.ui``: the console's request
log (one row per routed request) and whether ``/ui`` is served. See docs/console.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.values import ValueReader

#: The keys of ``general_settings.request_log``.
REQUEST_LOG_KEYS = ("path", "retention_days", "max_rows", "store_bodies", "ring_size")


@dataclass(frozen=True)
class RequestLogSettings:
    """Where the request log is kept and for how long (absent: an in-memory ring)."""

    #: The SQLite database file; None: a bounded in-memory ring of ``ring_size`` rows.
    path: str | None = None
    #: Rows older than this many days are deleted in the background (0: kept).
    retention_days: float = 7.0
    #: At most this many rows: the oldest go first (0: no bound but retention).
    max_rows: int = 1_000_000
    #: Keep request and answer bodies (secrets redacted). Off by default.
    store_bodies: bool = False
    #: The in-memory ring's length (without ``path``).
    ring_size: int = 10_000
    #: ``request_log: false``: no request log at all (nor the Overview's live numbers).
    enabled: bool = True


def request_log_settings(reader: ValueReader, raw: Any, path: str) -> RequestLogSettings:
    """``raw``: the ``request_log`` value (a mapping, or None/absent for the defaults)."""
    if raw is None or raw is True:
        return RequestLogSettings()
    if raw is False:
        return RequestLogSettings(enabled=False)
    d = reader._mapping(raw, path)
    reader._unknown(d, set(REQUEST_LOG_KEYS), path)
    db = reader._str(d, "path", path)
    if db is not None and not db.strip():
        raise ConfigError(f"{path}.path", "must be a file path (or absent for memory)")
    retention = reader._float(d, "retention_days", path, 7.0)
    return RequestLogSettings(
        path=db,
        retention_days=retention,
        max_rows=reader._int(d, "max_rows", path, 1_000_000, 0),
        store_bodies=reader._bool(d, "store_bodies", path),
        ring_size=reader._int(d, "ring_size", path, 10_000, 1),
    )


def ui_setting(
    reader: ValueReader, g: Mapping[str, Any], path: str, master_key: str | None
) -> bool:
    """``general_settings.ui``: on by default when a master key is set."""
    return reader._bool(g, "ui", path, master_key is not None)
