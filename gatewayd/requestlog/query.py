"""What the Requests page asks for (:class:`RequestQuery`): filters and a keyset cursor.

Paging is by ``(ts, id)``, newest first: the next page starts below the last row seen,
so that every page is an index range scan, never an ``OFFSET`` over skipped rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Filters that match a column exactly.
EXACT = ("key", "alias", "deployment", "dialect", "endpoint")
MAX_LIMIT = 500


class QueryError(ValueError):
    """A filter the caller got wrong (answered 400, naming it)."""


@dataclass(frozen=True)
class RequestQuery:
    key: str | None = None
    alias: str | None = None
    deployment: str | None = None
    dialect: str | None = None
    endpoint: str | None = None
    #: An exact status (``429``) or a class (``5xx``, ``4xx``, ``error`` for >= 400).
    status: str | None = None
    cached: bool | None = None
    since: float | None = None  #: ts >= since
    until: float | None = None  #: ts < until
    #: The cursor: rows strictly older than (before_ts, before_id).
    before_ts: float | None = None
    before_id: int | None = None
    limit: int = 50

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> RequestQuery:
        """From query parameters (strings); raises :class:`QueryError`."""
        kw: dict[str, Any] = {k: args[k] for k in EXACT if args.get(k)}
        status = args.get("status")
        if status:
            if not (status.isdigit() or status in ("2xx", "3xx", "4xx", "5xx", "error")):
                raise QueryError("status: a code (429), a class (5xx) or error")
            kw["status"] = status
        cached = args.get("cached")
        if cached:
            if cached not in ("true", "false"):
                raise QueryError("cached: true or false")
            kw["cached"] = cached == "true"
        for name in ("since", "until", "before_ts"):
            if args.get(name):
                kw[name] = _number(args[name], name)
        if args.get("before_id"):
            kw["before_id"] = int(_number(args["before_id"], "before_id"))
        if args.get("before"):  # the cursor the last page answered: "ts:id"
            ts, _, rid = args["before"].partition(":")
            kw["before_ts"] = _number(ts, "before")
            kw["before_id"] = int(_number(rid or "0", "before"))
        if args.get("limit"):
            kw["limit"] = max(1, min(MAX_LIMIT, int(_number(args["limit"], "limit"))))
        return cls(**kw)

    def status_range(self) -> tuple[int, int] | None:
        """The statuses matched, as ``[low, high)``."""
        s = self.status
        if s is None:
            return None
        if s == "error":
            return 400, 1000
        if s.endswith("xx"):
            low = int(s[0]) * 100
            return low, low + 100
        return int(s), int(s) + 1

    def sql(self) -> tuple[str, list[Any]]:
        """The WHERE clause (with ``AND`` terms) and its parameters."""
        terms: list[str] = []
        params: list[Any] = []
        for name in EXACT:
            value = getattr(self, name)
            if value is not None:
                terms.append(f"{name} = ?")
                params.append(value)
        rng = self.status_range()
        if rng is not None and self.status is not None and self.status.isdigit():
            terms.append("status = ?")  # the (status, ts) index, in order
            params.append(rng[0])
        elif rng is not None:
            # A class (5xx): walk the ts index newest first and filter; a range on the
            # status index would sort every match before the first page.
            terms.append("+status >= ? AND +status < ?")
            params += list(rng)
        if self.cached is not None:
            terms.append("cached = ?")
            params.append(int(self.cached))
        if self.since is not None:
            terms.append("ts >= ?")
            params.append(self.since)
        if self.until is not None:
            terms.append("ts < ?")
            params.append(self.until)
        if self.before_ts is not None:
            terms.append("(ts < ? OR (ts = ? AND id < ?))")
            params += [self.before_ts, self.before_ts, self.before_id or 0]
        return (" WHERE " + " AND ".join(terms)) if terms else "", params

    def matches(self, row: Any, rid: int) -> bool:
        """The same filters on a row in memory (the ring)."""
        for name in EXACT:
            value = getattr(self, name)
            if value is not None and getattr(row, name) != value:
                return False
        rng = self.status_range()
        if rng is not None and not rng[0] <= row.status < rng[1]:
            return False
        if self.cached is not None and row.cached != self.cached:
            return False
        if self.since is not None and row.ts < self.since:
            return False
        if self.until is not None and row.ts >= self.until:
            return False
        if self.before_ts is not None and not (
            row.ts < self.before_ts or (row.ts == self.before_ts and rid < (self.before_id or 0))
        ):
            return False
        return True


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise QueryError(f"{name}: expected a number, got {text[:40]!r}") from None
