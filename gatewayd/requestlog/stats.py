"""Live numbers for the console's Overview, kept per minute for the last hour from the
rows the log is fed (in this process: with ``--workers``, per worker)."""

from __future__ import annotations

from typing import Any

from gatewayd.requestlog.row import RequestRow

MINUTES = 60


class Bucket:
    __slots__ = ("errors", "latency", "minute", "requests", "ttft", "ttft_n")

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.requests = 0
        self.errors = 0
        self.latency = 0.0
        self.ttft = 0.0
        self.ttft_n = 0

    def add(self, row: RequestRow) -> None:
        self.requests += 1
        self.errors += row.status >= 500 or row.status == 429
        self.latency += row.latency_ms
        if row.ttft_ms is not None:
            self.ttft += row.ttft_ms
            self.ttft_n += 1


class Series:
    """Per-minute buckets over the last hour, in a fixed ring."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: list[Bucket | None] = [None] * MINUTES

    def bucket(self, minute: int) -> Bucket:
        i = minute % MINUTES
        b = self.buckets[i]
        if b is None or b.minute != minute:
            b = self.buckets[i] = Bucket(minute)
        return b

    def window(self, now_minute: int, minutes: int) -> list[Bucket]:
        low = now_minute - minutes
        return [b for b in self.buckets if b is not None and low < b.minute <= now_minute]


class LiveStats:
    """Totals per minute, per alias and per deployment."""

    def __init__(self) -> None:
        self.total = Series()
        self.deployments: dict[str, Series] = {}
        self.aliases: dict[str, Series] = {}

    def add(self, row: RequestRow) -> None:
        minute = int(row.ts // 60)
        self.total.bucket(minute).add(row)
        if row.alias is not None:
            s = self.aliases.get(row.alias)
            if s is None:
                s = self.aliases[row.alias] = Series()
            s.bucket(minute).add(row)
        if row.deployment is not None:
            s = self.deployments.get(row.deployment)
            if s is None:
                s = self.deployments[row.deployment] = Series()
            s.bucket(minute).add(row)

    def chart(self, now: float) -> list[dict[str, Any]]:
        """Requests per second and errors, per minute over the last hour (oldest first)."""
        now_minute = int(now // 60)
        have = {b.minute: b for b in self.total.window(now_minute, MINUTES)}
        out = []
        for m in range(now_minute - MINUTES + 1, now_minute + 1):
            b = have.get(m)
            out.append(
                {
                    "minute": m * 60,
                    "rps": round((b.requests if b else 0) / 60.0, 3),
                    "errors": b.errors if b else 0,
                }
            )
        return out

    def recent(self, series: Series | None, now: float, minutes: int = 5) -> dict[str, Any]:
        """Requests, error rate, mean latency and TTFT over the last ``minutes``."""
        buckets = [] if series is None else series.window(int(now // 60), minutes)
        n = sum(b.requests for b in buckets)
        errors = sum(b.errors for b in buckets)
        ttft_n = sum(b.ttft_n for b in buckets)
        return {
            "requests": n,
            "error_rate": round(errors / n, 4) if n else 0.0,
            "latency_ms": round(sum(b.latency for b in buckets) / n, 1) if n else None,
            "ttft_ms": round(sum(b.ttft for b in buckets) / ttft_n, 1) if ttft_n else None,
        }
