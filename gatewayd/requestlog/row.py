"""One request log row: its columns, in order, and the query filters.

A row is a plain tuple in :data:`COLUMNS` order (built once per request, written as is
by ``executemany``): no key, only the key's *name*; bodies only with ``store_bodies``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

#: The columns after ``id``, in the order of a row tuple.
COLUMNS = (
    "ts",
    "request_id",
    "key_name",
    "alias",
    "deployment",
    "dialect",
    "endpoint",
    "status",
    "attempts",
    "fallback",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cached",
    "stream",
    "error",
    "attempt_log",
    "request_body",
    "response_body",
)

#: The columns a list answers with (attempts and bodies only in a row's detail).
LIST_COLUMNS = ("id", *COLUMNS[:-3])

Row = tuple[Any, ...]

#: Filters on an equal value, by query parameter name (each has an index).
EQUAL_FILTERS = ("key_name", "alias", "deployment", "status", "dialect", "endpoint", "cached")

#: The largest page a query answers.
MAX_PAGE = 500


@dataclass(frozen=True)
class Query:
    """A page of rows, newest first: those with ``id < before`` matching every filter."""

    equal: tuple[tuple[str, Any], ...] = ()
    since: float | None = None
    until: float | None = None
    before: int | None = None
    limit: int = 50


@dataclass(frozen=True)
class Page:
    """What a query found: ``rows`` as dicts, and the ``before`` of the next page (None:
    the last page)."""

    rows: list[dict[str, Any]]
    next_before: int | None


def as_dict(row_id: int, row: Row, columns: tuple[str, ...] = LIST_COLUMNS) -> dict[str, Any]:
    """A stored row (``id`` and :data:`COLUMNS`) as the API answers it."""
    full = dict(zip(("id", *COLUMNS), (row_id, *row), strict=True))
    out = {c: full[c] for c in columns}
    out["cached"] = bool(out["cached"])
    out["stream"] = bool(out["stream"])
    if "attempt_log" in out:
        out["attempt_log"] = _attempts(out)
    return out


def _attempts(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A row's attempts: those noted (several, or a failure), else its one attempt."""
    text = row.get("attempt_log")
    if text:
        try:
            notes = json.loads(text)
        except ValueError:
            notes = []
        keys = ("deployment", "status", "latency_ms", "error")
        return [dict(zip(keys, n, strict=False)) for n in notes if isinstance(n, list)]
    if row.get("attempts") == 1 and row.get("deployment") and not row.get("error"):
        return [
            {
                "deployment": row["deployment"],
                "status": row["status"],
                "latency_ms": row["latency_ms"],
                "error": None,
            }
        ]
    return []


def parse_query(args: dict[bytes, list[bytes]]) -> Query:
    """A :class:`Query` from URL arguments (``?alias=x&status=500&before=123``); raises
    ValueError naming the bad parameter."""

    def one(name: str) -> str | None:
        v = args.get(name.encode())
        return v[0].decode("utf-8", "replace") if v and v[0] else None

    equal: list[tuple[str, Any]] = []
    for name in EQUAL_FILTERS:
        v = one("key" if name == "key_name" else name) or one(name)
        if v is None:
            continue
        if name == "status":
            if not v.isdigit():
                raise ValueError("status must be an HTTP status number")
            equal.append((name, int(v)))
        elif name == "cached":
            if v not in ("true", "false", "1", "0"):
                raise ValueError("cached must be true or false")
            equal.append((name, 1 if v in ("true", "1") else 0))
        else:
            equal.append((name, v))

    def number(name: str) -> float | None:
        v = one(name)
        if v is None:
            return None
        try:
            return float(v)
        except ValueError:
            raise ValueError(f"{name} must be a number") from None

    before = number("before")
    limit = number("limit")
    return Query(
        equal=tuple(equal),
        since=number("since"),
        until=number("until"),
        before=None if before is None else int(before),
        limit=max(1, min(MAX_PAGE, int(limit or 50))),
    )


def matches(q: Query, row: Row) -> bool:
    """Whether the ring's ``row`` passes ``q``'s filters (the SQL does it for SQLite)."""
    for name, value in q.equal:
        if row[_INDEX[name]] != value:
            return False
    ts = row[0]
    return (q.since is None or ts >= q.since) and (q.until is None or ts < q.until)


#: Each key's ``{day: {"usd": ..., "requests": ...}}`` (UTC days, ``YYYY-MM-DD``).
SpendByDay = dict[str, dict[str, dict[str, float]]]


def add_spend(out: SpendByDay, key: str, ts: float, usd: float, requests: int = 1) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(ts))
    entry = out.setdefault(key, {}).setdefault(day, {"usd": 0.0, "requests": 0})
    entry["usd"] = round(entry["usd"] + usd, 10)
    entry["requests"] += requests


_INDEX = {c: i for i, c in enumerate(COLUMNS)}
