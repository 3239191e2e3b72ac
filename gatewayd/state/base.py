"""The shared-state seam: one small interface, two stores (memory, Redis).

Every rule that must hold across gateway instances (rate-limit windows, budgets,
parallel-request counts, cooldowns, the Responses store) is expressed with these
few atomic operations, so one code path runs on either store.

Windows are fixed and anchored at their first use: a window opens when the first unit
is taken, lasts ``window`` seconds, then the next take opens a new one. A client sees
an exact count within a window and an honest reset time (when the window closes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred


class StoreUnavailable(Exception):
    """The shared store did not answer (down, or slower than its timeout)."""


@dataclass(frozen=True)
class WindowTake:
    """Take ``amount`` from the window counter ``key`` (``limit`` per ``window`` seconds).

    Admitted while the window's use is below ``limit`` (so the last admitted take may
    go over by at most its own ``amount``: overshoot is bounded by one reservation).
    ``limit`` None only counts (spend) and never refuses."""

    key: str
    limit: float | None
    amount: float
    window: float


@dataclass(frozen=True)
class LeaseTake:
    """Hold one of ``limit`` concurrent slots of ``key`` under ``lease`` (an id unique
    per request); the slot frees itself after ``ttl`` seconds if never released (an
    instance that died while holding it)."""

    key: str
    limit: int
    lease: str
    ttl: float
    #: One request's slot: when the take's answer is lost (a timeout, a cancel), the
    #: store gives the slot back, since the server may still apply it. False for a
    #: lease that is not one request's (a shared cooldown, named by its deployment).
    abandon: bool = True


Take = WindowTake | LeaseTake


@dataclass(frozen=True)
class Usage:
    """One counter's state after a take (or a peek)."""

    key: str
    used: float
    limit: float | None
    #: Absolute time (the store's clock) when the window closes; 0 for leases / no window.
    reset_at: float
    #: When the window opened: a settle applies only to the window it reserved in.
    start: float

    @property
    def remaining(self) -> float | None:
        return None if self.limit is None else max(0.0, self.limit - self.used)


@dataclass(frozen=True)
class TakeResult:
    """All takes were applied (``ok``), or none was and ``refused`` names the first
    counter that was full. ``usage`` holds each take's counter, in order."""

    ok: bool
    usage: tuple[Usage, ...]
    refused: int | None = None
    #: The store that took (settle and release there); set by :class:`FailoverStore`.
    backend: StateStore | None = field(default=None, compare=False, repr=False)


class StateStore(Protocol):
    """Atomic counters and a key/value store; every method returns a Deferred and fails
    with :class:`StoreUnavailable` when the store cannot answer in time.

    Window times come from the clock the store was built with (the gateway's reactor):
    instances sharing one Redis need synchronised clocks (NTP), as any fleet does."""

    def take(self, takes: Sequence[Take]) -> Deferred[TakeResult]:
        """All or nothing: fires with a :class:`TakeResult`."""
        ...

    def settle(self, key: str, start: float, delta: float) -> Deferred[None]:
        """Add ``delta`` (may be negative) to window ``key`` if it is still the window
        that opened at ``start`` (a closed window is not reopened). Fires with None."""
        ...

    def settle_many(
        self, windows: Sequence[tuple[str, float, float]], leases: Sequence[tuple[str, str]]
    ) -> Deferred[None]:
        """Several :meth:`settle` (``(key, start, delta)``) and :meth:`release`
        (``(key, lease)``) in one call (one round trip to Redis). Fires with None."""
        ...

    def release(self, key: str, lease: str) -> Deferred[None]:
        """Free the slot held under ``lease``. Fires with None."""
        ...

    def peek(self, takes: Sequence[Take]) -> Deferred[tuple[Usage, ...]]:
        """Each counter's state, nothing taken. Fires with one :class:`Usage` per take."""
        ...

    def members(self, key: str) -> Deferred[dict[str, float]]:
        """The live leases of ``key`` and when each expires (shared cooldowns use this:
        one lease per deployment cooling down). Fires with ``{lease: expires_at}``."""
        ...

    def get(self, key: str) -> Deferred[str | None]:
        """Fires with the value, or None when absent or expired."""
        ...

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        """Store ``value`` for ``ttl`` seconds. Fires with None."""
        ...

    def delete(self, key: str) -> Deferred[None]:
        """Fires with None."""
        ...

    def close(self) -> Deferred[None]:
        """Drop connections. Fires with None."""
        ...
