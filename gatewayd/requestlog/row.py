"""One request as the request log keeps it (:class:`RequestRow`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any


@dataclass(slots=True)
class RequestRow:
    """One finished request. Never a key: ``key`` is the client key's *name*."""

    ts: float  #: when it arrived (Unix seconds)
    request_id: str
    key: str | None
    alias: str | None
    deployment: str | None
    dialect: str
    endpoint: str  #: the path, without the query
    status: int
    attempts: int
    fallback: str | None
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    stream: bool
    outcome: str | None  #: why it failed, in a word (``upstream_error``...), if it did
    #: Each upstream attempt: ``[deployment, status, ms, error]`` (JSON text in SQLite).
    attempt_log: Any = None
    #: Request and response bodies (JSON text, secrets redacted), only with store_bodies.
    request_body: str | None = None
    response_body: str | None = None

    def as_tuple(self) -> tuple[Any, ...]:
        """The columns' values, in order (not ``dataclasses.astuple``: it deep-copies)."""
        values: tuple[Any, ...] = _VALUES(self)
        return values

    def summary(self) -> dict[str, Any]:
        """The row for the list: without the bodies."""
        d = {f: getattr(self, f) for f in SUMMARY}
        d["has_bodies"] = self.request_body is not None or self.response_body is not None
        return d

    def detail(self) -> dict[str, Any]:
        """Everything, bodies included (when stored)."""
        d = self.summary()
        d["request_body"] = self.request_body
        d["response_body"] = self.response_body
        d["attempt_log"] = attempt_dicts(self.attempt_log)
        return d


#: The column names, in the dataclass's (and the table's) order.
COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RequestRow))
_VALUES = attrgetter(*COLUMNS)
#: What the request list shows: all but the attempts and the bodies (the detail's).
SUMMARY: tuple[str, ...] = COLUMNS[:-3]


def attempt_dicts(attempts: Any) -> list[dict[str, Any]] | None:
    """``[deployment, status, ms, error]`` lists as the API's objects."""
    if not attempts:
        return None
    return [
        {"deployment": d, "status": s, "latency_ms": ms, "error": err} for d, s, ms, err in attempts
    ]
