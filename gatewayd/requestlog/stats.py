"""Live numbers for the console's Overview, per process: per-minute buckets of the last
hour, in total and per deployment (requests, errors, latency, time to first token).

Fed by the request log stage with each finished request: a dict lookup and a few
additions, no allocation on the common path once a minute's bucket exists."""

from __future__ import annotations

from collections import deque
from typing import Any

#: Minutes kept.
WINDOW = 60


class Bucket:
    """One minute's counts."""

    __slots__ = ("errors", "latency", "minute", "requests", "ttft", "ttft_n")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.requests = 0
        self.errors = 0
        self.latency = 0.0
        self.ttft = 0.0
        self.ttft_n = 0


class Series:
    """The last :data:`WINDOW` minutes of one thing (the total, or a deployment)."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: deque[Bucket] = deque(maxlen=WINDOW)

    def add(self, minute: int, error: bool, latency_ms: float, ttft_ms: float | None) -> None:
        buckets = self.buckets
        if not buckets or buckets[-1].minute != minute:
            buckets.append(Bucket(minute))
        b = buckets[-1]
        b.requests += 1
        b.errors += error
        b.latency += latency_ms
        if ttft_ms is not None:
            b.ttft += ttft_ms
            b.ttft_n += 1

    def summary(self, now_minute: int, minutes: int) -> dict[str, Any]:
        """Requests, error rate, mean latency and TTFT over the last ``minutes``."""
        n = errors = ttft_n = 0
        latency = ttft = 0.0
        for b in self.buckets:
            if b.minute > now_minute - minutes:
                n += b.requests
                errors += b.errors
                latency += b.latency
                ttft += b.ttft
                ttft_n += b.ttft_n
        return {
            "requests": n,
            "error_rate": round(errors / n, 4) if n else 0.0,
            "latency_ms": round(latency / n, 1) if n else None,
            "ttft_ms": round(ttft / ttft_n, 1) if ttft_n else None,
        }

    def chart(self, now_minute: int) -> list[dict[str, Any]]:
        """One point per minute of the last hour (oldest first): rps and errors."""
        by_minute = {b.minute: b for b in self.buckets}
        out = []
        for m in range(now_minute - WINDOW + 1, now_minute + 1):
            b = by_minute.get(m)
            out.append(
                {
                    "t": m * 60,
                    "rps": round(b.requests / 60.0, 3) if b else 0.0,
                    "errors": b.errors if b else 0,
                }
            )
        return out


class LiveStats:
    """The total and one :class:`Series` per (alias, deployment)."""

    def __init__(self) -> None:
        self.total = Series()
        self.deployments: dict[tuple[str, str], Series] = {}

    def add(
        self,
        now: float,
        alias: str,
        deployment: str | None,
        status: int,
        latency_ms: float,
        ttft_ms: float | None,
    ) -> None:
        minute = int(now // 60)
        error = status >= 500 or status == 429 or status == 0
        self.total.add(minute, error, latency_ms, ttft_ms)
        if deployment is not None:
            key = (alias, deployment)
            series = self.deployments.get(key)
            if series is None:
                series = self.deployments[key] = Series()
            series.add(minute, error, latency_ms, ttft_ms)
