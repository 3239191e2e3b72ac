"""The supervisor's restart backoff, on a fake clock: a worker that keeps dying soon after
its start waits longer each time (up to 30 s); one that lived long restarts at once."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gatewayd.daemon.workers import Supervisor, _Slot


class Recorder(Supervisor):
    def __init__(self, clock: Clock) -> None:
        super().__init__("gateway.yaml", endpoint=None, count=1, reactor=clock)  # type: ignore[arg-type]
        self.spawned: list[float] = []

    def _spawn(self, slot: _Slot) -> None:
        self.spawned.append(self.reactor.seconds())
        slot.started = self.reactor.seconds()
        slot.restart = None
        slot.ended = Deferred()


def delays(clock: Clock) -> list[float]:
    return [c.getTime() - clock.seconds() for c in clock.getDelayedCalls()]


def die(sup: Recorder, slot: _Slot, after: float) -> list[float]:
    clock: Any = sup.reactor
    clock.advance(after)
    sup._ended(slot, Failure(RuntimeError("boom")))
    return delays(clock)


def test_quick_deaths_back_off_exponentially_up_to_30s() -> None:
    clock = Clock()
    sup = Recorder(clock)
    slot = sup.slots[0]
    seen = []
    for _ in range(10):
        (delay,) = die(sup, slot, 1.0)
        seen.append(delay)
        clock.advance(delay)
    assert seen == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert len(sup.spawned) == 10
    # After a long life the count starts again.
    (delay,) = die(sup, slot, 60.0)
    assert delay == 0.25


def test_no_restart_while_stopping() -> None:
    clock = Clock()
    sup = Recorder(clock)
    sup._stopping = True
    assert die(sup, sup.slots[0], 1.0) == []
