"""FailoverStore: the open/closed policy when the shared store fails, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gatewayd.state import FailoverStore, MemoryStore, StoreUnavailable, WindowTake


class Flaky(MemoryStore):
    """A memory store that can be switched off, like a Redis that went away."""

    down = False

    def take(self, takes: Any) -> Any:
        if self.down:
            return fail(StoreUnavailable("connection refused"))
        return super().take(takes)


def _take(store: FailoverStore) -> Any:
    d: Deferred[Any] = store.take([WindowTake("k", 2, 1, 60)])
    out: list[Any] = []
    d.addBoth(out.append)
    return out[0]


def test_open_serves_on_local_state_and_resumes_sharing() -> None:
    clock = Clock()
    primary, local = Flaky(clock), MemoryStore(clock)
    outages: list[int] = []
    store = FailoverStore(primary, local, clock, "open", on_outage=lambda: outages.append(1))
    assert _take(store).backend is primary
    primary.down = True
    r1, r2 = _take(store), _take(store)
    assert r1.ok and r1.backend is local and r2.backend is local
    assert outages == [1]  # once per outage, not per call
    assert store.health()["status"] == "unavailable"
    primary.down = False
    r3 = _take(store)
    assert r3.backend is primary and r3.usage[0].used == 2  # the shared count again
    assert store.health()["status"] == "ok" and store.health()["outages"] == 1


def test_closed_fails_the_call() -> None:
    clock = Clock()
    primary = Flaky(clock)
    primary.down = True
    store = FailoverStore(primary, MemoryStore(clock), clock, "closed")
    result = _take(store)
    assert isinstance(result, Failure) and result.check(StoreUnavailable)


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_health_names_no_secret(mode: str) -> None:
    clock = Clock()
    store = FailoverStore(MemoryStore(clock), MemoryStore(clock), clock, mode, "redis://h:1/0")
    assert store.health()["backend"] == "redis://h:1/0"
    assert store.health()["failure_mode"] == mode
