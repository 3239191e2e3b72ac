"""Requests in flight per deployment, and waiting for capacity when all are full."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred

from gatewayd.routing.cooldown import Cooldowns


class Candidate(Protocol):
    """What the balancer needs to know of a deployment."""

    @property
    def id(self) -> str: ...

    @property
    def model_name(self) -> str: ...

    @property
    def weight(self) -> float | None: ...

    @property
    def max_parallel_requests(self) -> int | None: ...


class WaitQueue:
    """Requests waiting FIFO for a slot of one alias. Cancelling one is O(1): it stays
    in the queue, skipped when a slot frees, and the queue is compacted whenever the
    cancelled ones are the majority, so that many waits that time out are not
    quadratic and the queue stays within twice the live waiters."""

    def __init__(self) -> None:
        self._q: deque[Deferred[None]] = deque()
        self._dead = 0

    def __len__(self) -> int:
        """Entries held, cancelled ones included."""
        return len(self._q)

    def add(self) -> Deferred[None]:
        def cancel(d: Deferred[None]) -> None:
            self._dead += 1
            if self._dead * 2 > len(self._q):
                # ``d`` is not yet marked called while its canceller runs.
                self._q = deque(w for w in self._q if not w.called and w is not d)
                self._dead = 0

        d: Deferred[None] = Deferred(cancel)
        self._q.append(d)
        return d

    def wake_one(self) -> None:
        while self._q:
            d = self._q.popleft()
            if d.called:  # cancelled while waiting
                self._dead -= 1
                continue
            d.callback(None)
            return


class Balancer:
    """Counts requests in flight per deployment, and queues requests FIFO when every
    deployment of an alias is at ``max_parallel_requests``. (The choice among
    deployments is :class:`gatewayd.routing.pool.AliasPool`'s.)"""

    def __init__(self, health: Cooldowns) -> None:
        self.health = health
        self.waiters: dict[str, WaitQueue] = {}

    def has_room(self, c: Candidate) -> bool:
        limit = c.max_parallel_requests
        return limit is None or self.health.get(c.id).in_flight < limit

    def acquire(self, c: Candidate) -> Callable[[], None]:
        """Count a request in flight on ``c``; returns the (idempotent) release."""
        self.health.add_in_flight(c.id, 1)
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.health.add_in_flight(c.id, -1)
            q = self.waiters.get(c.model_name)
            if q is not None:
                q.wake_one()

        return release

    def wait_for_room(self, alias: str) -> Deferred[None]:
        """Fires when a deployment of ``alias`` frees a slot; first come, first served;
        cancelling leaves the queue."""
        q = self.waiters.get(alias)
        if q is None:
            q = self.waiters[alias] = WaitQueue()
        return q.add()
