"""Reactor lag: how late a periodic call fires, the sign that the event loop is blocked.

A chain of ``callLater`` rather than a :class:`~twisted.internet.task.LoopingCall`:
LoopingCall realigns to its grid and skips missed beats, which hides how late the
call really was; here every tick knows exactly when it was due.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Seconds between probes: a block shorter than this still shows, as the next tick's lag.
INTERVAL = 0.5


class ReactorLag:
    """Calls ``observe(seconds_late)`` every ``interval`` on ``clock``, then ``tick()``."""

    def __init__(
        self,
        clock: IReactorTime,
        observe: Callable[[float], None],
        interval: float = INTERVAL,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.clock = clock
        self.observe = observe
        self.interval = interval
        self.tick = tick
        self._due = 0.0
        self._call: IDelayedCall | None = None

    @property
    def running(self) -> bool:
        return self._call is not None

    def start(self) -> None:
        if self._call is None:
            self._schedule()

    def stop(self) -> None:
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _schedule(self) -> None:
        self._due = self.clock.seconds() + self.interval
        self._call = self.clock.callLater(self.interval, self._fire)

    def _fire(self) -> None:
        late = max(0.0, self.clock.seconds() - self._due)
        self._schedule()  # first: an error below must not end the probe
        self.observe(late)
        if self.tick is not None:
            self.tick()
