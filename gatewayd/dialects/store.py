"""What ``previous_response_id`` needs: each stored response, for a while.

:class:`ResponseStore` is the narrow seam (get, put with a TTL, delete; bytes values,
Deferred results) so that a shared store (Redis) can stand in for
:class:`MemoryResponseStore`, the bounded in-process one.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime


class ResponseStore(Protocol):
    """Keyed bytes with a time to live."""

    def get(self, key: str) -> Deferred[bytes | None]:
        """Fires with the value, or None when absent or expired."""

    def put(self, key: str, value: bytes, ttl: float) -> Deferred[None]:
        """Fires when stored (a store may refuse a value too big to keep: then nothing)."""

    def delete(self, key: str) -> Deferred[bool]:
        """Fires with True when there was a value."""


class MemoryResponseStore:
    """In memory, bounded in bytes (oldest entries go first) and by each entry's TTL."""

    def __init__(self, clock: IReactorTime, max_bytes: int) -> None:
        self.clock = clock
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str) -> Deferred[bytes | None]:
        entry = self._entries.get(key)
        if entry is None:
            return succeed(None)
        expires, value = entry
        if expires <= self.clock.seconds():
            self._drop(key)
            return succeed(None)
        return succeed(value)

    def put(self, key: str, value: bytes, ttl: float) -> Deferred[None]:
        self._drop(key)
        if len(value) > self.max_bytes or ttl <= 0:
            return succeed(None)
        self._expire()
        while self.size + len(value) > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))
        self._entries[key] = (self.clock.seconds() + ttl, value)
        self.size += len(value)
        return succeed(None)

    def delete(self, key: str) -> Deferred[bool]:
        entry = self._entries.get(key)
        live = entry is not None and entry[0] > self.clock.seconds()
        self._drop(key)
        return succeed(live)

    def _drop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.size -= len(entry[1])
        return True

    def _expire(self) -> None:
        now = self.clock.seconds()
        for key in [k for k, (exp, _) in self._entries.items() if exp <= now]:
            self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class StoredResponse:
    """One response as a follow-up needs it."""

    #: The ``Response`` object (what ``GET /responses/{id}`` answers).
    response: dict[str, Any]
    #: The whole input that led to it, as Responses items (history included).
    input_items: list[Any]
    #: The deployment whose native id this is (follow-ups must go there), else None.
    native_deployment: str | None = None

    def dump(self) -> bytes:
        return json.dumps(
            {
                "response": self.response,
                "input_items": self.input_items,
                "native_deployment": self.native_deployment,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def load(cls, data: bytes) -> StoredResponse:
        obj = json.loads(data)
        return cls(obj["response"], obj["input_items"], obj.get("native_deployment"))

    def history(self) -> list[Any]:
        """Input items for a follow-up: this response's input, then its output."""
        return [*self.input_items, *(self.response.get("output") or [])]
