"""The shared store with its failure policy: Redis first, local memory when it fails.

``state_store_failure: open`` (the default) serves on local state while Redis is
unreachable (logged once per outage, counted, shown in ``/health``) and goes back to
Redis as soon as it answers again; ``closed`` fails the call, and the web layer
answers 503.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from gatewayd.observability.log import get_logger
from gatewayd.state.base import StateStore, StoreUnavailable, Take, TakeResult, Usage

log = get_logger(__name__)

T = TypeVar("T")


class FailoverStore:
    """A :class:`StateStore` over ``primary`` that falls back to ``local`` (or fails)."""

    def __init__(
        self,
        primary: StateStore,
        local: StateStore,
        clock: IReactorTime,
        failure_mode: str = "open",
        name: str = "redis",
        on_outage: Callable[[], None] | None = None,
    ) -> None:
        self.primary = primary
        self.local = local
        self.clock = clock
        self.failure_mode = failure_mode
        self.name = name
        self.on_outage = on_outage or (lambda: None)
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.outages = 0

    @property
    def up(self) -> bool:
        return self.down_since is None

    def health(self) -> dict[str, Any]:
        """For ``/health``: no password (the name is the address without it)."""
        return {
            "backend": self.name,
            "status": "ok" if self.up else "unavailable",
            "failure_mode": self.failure_mode,
            "down_for_s": None
            if self.down_since is None
            else round(self.clock.seconds() - self.down_since, 3),
            "outages": self.outages,
            "last_error": self.last_error,
        }

    def _down(self, why: str) -> None:
        self.last_error = why[:300]
        if self.down_since is not None:
            return
        self.down_since = self.clock.seconds()
        self.outages += 1
        self.on_outage()
        then = "serving on local state" if self.failure_mode == "open" else "refusing with 503"
        log.error(
            "state store {name} unavailable ({why}): {then}", name=self.name, why=why, then=then
        )

    def _back(self) -> None:
        if self.down_since is None:
            return
        log.info(
            "state store {name} is back after {s:.1f} s: sharing resumed",
            name=self.name,
            s=self.clock.seconds() - self.down_since,
        )
        self.down_since = None

    def _use(self, op: Callable[[StateStore], Deferred[T]]) -> Deferred[T]:
        d = op(self.primary)

        def ok(result: T) -> T:
            self._back()
            return result

        def failed(f: Failure) -> Deferred[T] | Failure:
            f.trap(StoreUnavailable)
            self._down(str(f.value))
            if self.failure_mode == "closed":
                return f
            return op(self.local)

        d.addCallbacks(ok, failed)
        return d

    def take(self, takes: Sequence[Take]) -> Deferred[TakeResult]:
        def on(store: StateStore) -> Deferred[TakeResult]:
            d = store.take(takes)
            return d.addCallback(lambda r: TakeResult(r.ok, r.usage, r.refused, r.backend or store))

        return self._use(on)

    def settle(self, key: str, start: float, delta: float) -> Deferred[None]:
        return self._use(lambda s: s.settle(key, start, delta))

    def settle_many(
        self, windows: Sequence[tuple[str, float, float]], leases: Sequence[tuple[str, str]]
    ) -> Deferred[None]:
        return self._use(lambda s: s.settle_many(windows, leases))

    def release(self, key: str, lease: str) -> Deferred[None]:
        return self._use(lambda s: s.release(key, lease))

    def peek(self, takes: Sequence[Take]) -> Deferred[tuple[Usage, ...]]:
        return self._use(lambda s: s.peek(takes))

    def members(self, key: str) -> Deferred[dict[str, float]]:
        return self._use(lambda s: s.members(key))

    def get(self, key: str) -> Deferred[str | None]:
        return self._use(lambda s: s.get(key))

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        return self._use(lambda s: s.set(key, value, ttl))

    def delete(self, key: str) -> Deferred[None]:
        return self._use(lambda s: s.delete(key))

    def close(self) -> Deferred[None]:
        return self.primary.close()
