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
    def rpm(self) -> int | None: ...

    @property
    def max_parallel_requests(self) -> int | None: ...


class Balancer:
    """Counts requests in flight per deployment, and queues requests FIFO when every
    deployment of an alias is at ``max_parallel_requests``. (The choice among
    deployments is :class:`gatewayd.routing.pool.AliasPool`'s.)"""

    def __init__(self, health: Cooldowns) -> None:
        self.health = health
        self._waiters: dict[str, deque[Deferred[None]]] = {}

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
            q = self._waiters.get(c.model_name)
            if q:
                q.popleft().callback(None)

        return release

    def wait_for_room(self, alias: str) -> Deferred[None]:
        """Fires when a deployment of ``alias`` frees a slot; first come, first served;
        cancelling leaves the queue."""
        q = self._waiters.setdefault(alias, deque())

        def cancel(d: Deferred[None]) -> None:
            if d in q:
                q.remove(d)

        d: Deferred[None] = Deferred(cancel)
        q.append(d)
        return d
