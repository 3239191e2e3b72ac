"""The in-process :class:`StateStore`: the same rules as Redis, for one instance.

Single-threaded (the reactor), so every operation is atomic by construction; it
answers synchronously with already-fired Deferreds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from gatewayd.state.base import LeaseTake, Take, TakeResult, Usage, WindowTake


@dataclass
class _Window:
    start: float
    used: float
    length: float


@dataclass
class _Leases:
    #: lease id -> expiry time
    held: dict[str, float] = field(default_factory=dict)


class MemoryStore:
    """Counters and values in this process, on an injected clock."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._leases: dict[str, _Leases] = {}
        self._values: dict[str, tuple[str, float]] = {}

    # -- counters --------------------------------------------------------------

    def _window(self, t: WindowTake, now: float) -> _Window:
        w = self._windows.get(t.key)
        if w is None or now >= w.start + w.length:
            # A closed window is forgotten; the next take opens a fresh one.
            w = _Window(now, 0.0, t.window)
        return w

    def _held(self, t: LeaseTake, now: float) -> _Leases:
        ls = self._leases.setdefault(t.key, _Leases())
        for lease, until in list(ls.held.items()):
            if until <= now:
                del ls.held[lease]
        return ls

    def _usage(self, t: Take, now: float) -> Usage:
        if isinstance(t, WindowTake):
            w = self._window(t, now)
            return Usage(t.key, w.used, t.limit, w.start + w.length, w.start)
        return Usage(t.key, float(len(self._held(t, now).held)), float(t.limit), 0.0, 0.0)

    def take(self, takes: Sequence[Take]) -> Deferred[TakeResult]:
        now = self.clock.seconds()
        self._expire()
        before = [self._usage(t, now) for t in takes]
        for i, u in enumerate(before):
            if u.limit is not None and u.used >= u.limit:
                return succeed(TakeResult(False, tuple(before), i))
        after = []
        for t in takes:
            if isinstance(t, WindowTake):
                w = self._window(t, now)
                w.used += t.amount
                self._windows[t.key] = w
            else:
                self._held(t, now).held[t.lease] = now + t.ttl
            after.append(self._usage(t, now))
        return succeed(TakeResult(True, tuple(after)))

    def settle(self, key: str, start: float, delta: float) -> Deferred[None]:
        w = self._windows.get(key)
        now = self.clock.seconds()
        if w is not None and w.start == start and now < w.start + w.length:
            w.used = max(0.0, w.used + delta)
        return succeed(None)

    def settle_many(
        self, windows: Sequence[tuple[str, float, float]], leases: Sequence[tuple[str, str]]
    ) -> Deferred[None]:
        for key, start, delta in windows:
            self.settle(key, start, delta)
        for key, lease in leases:
            self.release(key, lease)
        return succeed(None)

    def release(self, key: str, lease: str) -> Deferred[None]:
        ls = self._leases.get(key)
        if ls is not None:
            ls.held.pop(lease, None)
            if not ls.held:
                del self._leases[key]
        return succeed(None)

    def peek(self, takes: Sequence[Take]) -> Deferred[tuple[Usage, ...]]:
        now = self.clock.seconds()
        return succeed(tuple(self._usage(t, now) for t in takes))

    def members(self, key: str) -> Deferred[dict[str, float]]:
        now = self.clock.seconds()
        ls = self._leases.get(key)
        return succeed({} if ls is None else {k: t for k, t in ls.held.items() if t > now})

    # -- values ----------------------------------------------------------------

    def get(self, key: str) -> Deferred[str | None]:
        entry = self._values.get(key)
        if entry is None:
            return succeed(None)
        value, until = entry
        if self.clock.seconds() >= until:
            del self._values[key]
            return succeed(None)
        return succeed(value)

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        self._values[key] = (value, self.clock.seconds() + ttl)
        self._expire()
        return succeed(None)

    def delete(self, key: str) -> Deferred[None]:
        self._values.pop(key, None)
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)

    def _expire(self) -> None:
        """Drop expired values and closed windows now and then, so memory stays bounded."""
        if len(self._values) + len(self._windows) + len(self._leases) < 10_000:
            return
        now = self.clock.seconds()
        self._leases = {
            k: ls for k, ls in self._leases.items() if any(t > now for t in ls.held.values())
        }
        self._values = {k: v for k, v in self._values.items() if v[1] > now}
        self._windows = {k: w for k, w in self._windows.items() if now < w.start + w.length}
