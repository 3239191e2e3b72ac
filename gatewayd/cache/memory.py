"""The in-process answer store: bounded by bytes, least recently used out, each
entry expiring after its ttl. One per process: workers do not share it (use
``type: redis`` for that)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

from gatewayd.cache.entry import CachedAnswer


class MemoryAnswers:
    """``key -> (expires, entry)``, at most ``max_bytes`` of entries."""

    def __init__(
        self,
        clock: IReactorTime,
        max_bytes: int,
        on_evict: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.clock = clock
        self.max_bytes = max_bytes
        #: Called with the number of entries pushed out to make room.
        self.on_evict = on_evict
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedAnswer | None:
        """The live entry, now the most recently used; None when absent or expired."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires, entry = found
        if self.clock.seconds() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedAnswer, ttl: float) -> None:
        """Store ``entry`` for ``ttl`` seconds; one larger than the whole bound is not kept."""
        size = entry.size
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self.clock.seconds() + ttl, entry)
        self.bytes += size
        evicted = 0
        now = self.clock.seconds()
        while self.bytes > self.max_bytes:
            old_key, (expires, _) = next(iter(self._entries.items()))
            self._drop(old_key)
            if expires > now:  # an expired entry going is no eviction
                evicted += 1
        if evicted:
            self.on_evict(evicted)

    def resize(self, max_bytes: int) -> None:
        """A reload changed ``max_bytes``: keep what fits, oldest out first."""
        self.max_bytes = max_bytes
        evicted = 0
        while self.bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))
            evicted += 1
        if evicted:
            self.on_evict(evicted)

    def _drop(self, key: str) -> None:
        _, entry = self._entries.pop(key)
        self.bytes -= entry.size
