"""The usage log: one JSON line per finished request, for billing and audits.

Time, key name, alias, deployment, tokens, cost, status, latency, and whether it was a
stream. Never a prompt, an answer or a key. Rotated by size (``usage_log_max_bytes``),
keeping ``usage_log_backups`` old files (``usage.jsonl.1`` is the newest).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.python.logfile import LogFile

from gatewayd.observability.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class UsageRecord:
    key: str | None
    alias: str
    deployment: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    status: int
    latency_ms: float
    stream: bool
    #: Answered from the response cache (no upstream call, no cost).
    cached: bool = False
    #: Of ``prompt_tokens``: read from / written to the provider's prompt cache.
    prompt_cache_read_tokens: int = 0
    prompt_cache_write_tokens: int = 0

    def line(self, now: float) -> str:
        return json.dumps(
            {
                "time": datetime.fromtimestamp(now, timezone.utc).isoformat(
                    timespec="milliseconds"
                ),
                "key": self.key,
                "alias": self.alias,
                "deployment": self.deployment,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cost_usd": round(self.cost_usd, 10),
                "status": self.status,
                "latency_ms": round(self.latency_ms, 1),
                "stream": self.stream,
                "cached": self.cached,
                "prompt_cache_read_tokens": self.prompt_cache_read_tokens,
                "prompt_cache_write_tokens": self.prompt_cache_write_tokens,
            },
            separators=(",", ":"),
        )


class UsageLog:
    """Appends records to ``path``; a write that fails is logged, never a client error."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        directory, name = os.path.split(os.path.abspath(path))
        self._file = LogFile(name, directory, rotateLength=max_bytes, maxRotatedFiles=backups)
        self._failed = False

    def write(self, record: UsageRecord, now: float) -> None:
        try:
            self._file.write(record.line(now) + "\n")
            self._file.flush()
            self._failed = False
        except OSError as e:
            if not self._failed:  # once per failure streak, not per request
                log.error("usage log {path}: {err}", path=self.path, err=str(e))
            self._failed = True

    def close(self) -> None:
        self._file.close()
