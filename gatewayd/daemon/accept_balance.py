"""``--workers N``: long-lived connections spread evenly over the workers (issue 18).

The workers accept on one shared socket, and whichever wakes first takes what is queued:
accept order alone piled long streams onto one worker (64 streams over 2 workers: 21 and
45). Here every worker publishes its open connections in a small file shared by the
workers (a slot per worker: its pid and its count, ``mmap``'d, written in place), and a
worker holding more than :data:`SLACK` times the mean of the live workers (and at least
:data:`FLOOR` connections) stops accepting until it is back under it: the others take
the new connections meanwhile. While balancing, a worker accepts one connection per
wakeup (Twisted's listening port accepts up to a hundred and more per wakeup, all to the
first worker awake). A worker whose peers are dead (their pid gone) never stops.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

#: The most connections a worker may hold over the mean of the live workers.
SLACK = 1.1
#: Below this many connections of its own a worker does not stop accepting.
FLOOR = 8
#: Seconds between a stopped worker's looks at the others.
RECHECK = 0.01
_SLOT = struct.Struct("qq")  # pid, open connections
#: The workers' shared file, and their number (set by the supervisor).
BALANCE_ENV = "GATEWAYD_WORKER_BALANCE"
COUNT_ENV = "GATEWAYD_WORKER_COUNT"


def environment(path: str, count: int) -> dict[str, str]:
    """What a worker's environment holds for its balance."""
    return {BALANCE_ENV: path, COUNT_ENV: str(count)}


def from_environment(reactor: Any, index: str | None) -> AcceptBalance | None:
    """This worker's balance (worker ``index``), or None outside ``--workers N>1``."""
    path, count = os.environ.get(BALANCE_ENV), os.environ.get(COUNT_ENV)
    if not path or not count or int(count) < 2 or index is None:
        return None
    return AcceptBalance(reactor, path, int(index), int(count))


def create(path: str, count: int) -> None:
    """The shared file for ``count`` workers (the supervisor makes it, zeroed)."""
    with open(path, "wb") as f:
        f.write(b"\0" * (_SLOT.size * count))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AcceptBalance:
    """One worker's side: :meth:`changed` after each connection opened or closed."""

    def __init__(self, reactor: Any, path: str, index: int, count: int) -> None:
        self.reactor = reactor
        self.index = index
        self.count = count
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, _SLOT.size * count)
        finally:
            os.close(fd)
        _SLOT.pack_into(self._map, _SLOT.size * index, os.getpid(), 0)
        self.port: Any = None
        self.stopped = False
        self._open = 0

    def attach(self, port: Any) -> None:
        """Balance ``port`` (a listening TCP port): one accept per wakeup."""
        self.port = port
        read = port.doRead

        def one_at_a_time() -> Any:
            port.numberAccepts = 1
            return read()

        port.doRead = one_at_a_time

    def changed(self, open_now: int) -> None:
        self._open = open_now
        struct.pack_into("q", self._map, _SLOT.size * self.index + 8, open_now)
        if not self.stopped and open_now >= FLOOR and self._over():
            self.stopped = True
            if self.port is not None:
                self.port.stopReading()
            self.reactor.callLater(RECHECK, self._recheck)

    def _over(self) -> bool:
        """This worker holds more than its share (among the live workers)."""
        total, live = self._open, 1
        for i in range(self.count):
            if i == self.index:
                continue
            pid, n = _SLOT.unpack_from(self._map, _SLOT.size * i)
            if _alive(pid):
                total += n
                live += 1
        return live > 1 and self._open > SLACK * total / live

    def _recheck(self) -> None:
        if self._over():
            self.reactor.callLater(RECHECK, self._recheck)
            return
        self.stopped = False
        if self.port is not None and getattr(self.port, "connected", False):
            self.port.startReading()  # (not once the port stopped listening: a shutdown)
