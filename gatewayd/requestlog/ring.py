"""The request log without a path: the newest rows in a bounded ring, in memory."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed

from gatewayd.requestlog.query import RequestQuery
from gatewayd.requestlog.row import RequestRow


class RingLog:
    """At most ``size`` rows, newest last; queried in place (it is small)."""

    def __init__(self, size: int) -> None:
        self.rows: deque[tuple[int, RequestRow]] = deque(maxlen=size)
        self._next = 1

    def add(self, row: RequestRow) -> None:
        self.rows.append((self._next, row))
        self._next += 1

    def query(self, q: RequestQuery) -> Deferred[dict[str, Any]]:
        """Fires with ``{"rows": [...], "next": cursor or None}``, newest first."""
        out: list[dict[str, Any]] = []
        for rid, row in reversed(self.rows):
            if q.matches(row, rid):
                d = row.summary()
                d["id"] = rid
                out.append(d)
                if len(out) > q.limit:
                    break
        return succeed(page(out, q.limit))

    def get(self, rid: int) -> Deferred[dict[str, Any] | None]:
        for i, row in self.rows:
            if i == rid:
                d = row.detail()
                d["id"] = rid
                return succeed(d)
        return succeed(None)

    def spend(self, days: int) -> Deferred[list[dict[str, Any]]]:
        """Fires with each key's cost, requests and tokens per UTC day."""
        since = time.time() - days * 86400
        acc: dict[tuple[str, str], list[float]] = {}
        for _, row in self.rows:
            if row.ts < since or row.key is None:
                continue
            day = time.strftime("%Y-%m-%d", time.gmtime(row.ts))
            a = acc.setdefault((row.key, day), [0.0, 0, 0])
            a[0] += row.cost_usd
            a[1] += 1
            a[2] += row.prompt_tokens + row.completion_tokens
        return succeed(
            [
                {"key": k, "day": d, "cost_usd": a[0], "requests": a[1], "tokens": a[2]}
                for (k, d), a in sorted(acc.items())
            ]
        )

    def close(self) -> None:
        pass


def page(rows: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """One page of ``rows`` (fetched with one extra, to know if there is a next)."""
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = f"{rows[-1]['ts']!r}:{rows[-1]['id']}" if more and rows else None
    return {"rows": rows, "next": cursor}
