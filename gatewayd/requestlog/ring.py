"""The request log without a path: the last ``size`` rows in memory (per process)."""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed

from gatewayd.requestlog.row import (
    COLUMNS,
    Page,
    Query,
    Row,
    SpendByDay,
    add_spend,
    as_dict,
    matches,
)


class MemoryLog:
    """A bounded ring: the oldest row goes when a new one comes past ``size``."""

    def __init__(self, size: int) -> None:
        self._rows: deque[tuple[int, Row]] = deque(maxlen=size)
        self._next = 1

    def add(self, row: Row) -> None:
        self._rows.append((self._next, row))
        self._next += 1

    def query(self, q: Query) -> Deferred[Page]:
        """Fires at once with the page (newest first)."""
        out: list[dict[str, Any]] = []
        for row_id, row in reversed(self._rows):
            if q.before is not None and row_id >= q.before:
                continue
            if matches(q, row):
                out.append(as_dict(row_id, row))
                if len(out) > q.limit:
                    break
        more = len(out) > q.limit
        out = out[: q.limit]
        return succeed(Page(out, out[-1]["id"] if more else None))

    def spend_by_day(self, since: float) -> Deferred[SpendByDay]:
        """Fires with each key's cost and requests per UTC day since ``since``."""
        out: SpendByDay = {}
        for _, row in self._rows:
            if row[0] >= since and row[2] is not None:
                add_spend(out, row[2], row[0], row[14] or 0.0)
        return succeed(out)

    def get(self, row_id: int) -> Deferred[dict[str, Any] | None]:
        """Fires with the row with its bodies, or None."""
        for rid, row in self._rows:
            if rid == row_id:
                return succeed(as_dict(rid, row, ("id", *COLUMNS)))
        return succeed(None)

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> Deferred[None]:
        return succeed(None)
