"""Choosing a deployment of an alias, and waiting for capacity when all are full."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
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


def _share(c: Candidate, by: str) -> float:
    if by == "weight":
        return float(c.weight or 0.0)
    if by == "rpm":
        return float(c.rpm or 0)
    return 1.0


def simple_shuffle(candidates: Sequence[Candidate], rng: random.Random) -> Candidate:
    """A random pick weighted by ``weight``, else ``rpm``, else even."""
    if len(candidates) == 1:
        return candidates[0]
    by = "even"
    if any(c.weight for c in candidates):
        by = "weight"
    elif any(c.rpm for c in candidates):
        by = "rpm"
    shares = [_share(c, by) for c in candidates]
    total = sum(shares)
    if total <= 0:
        return rng.choice(list(candidates))
    x = rng.random() * total
    for c, s in zip(candidates, shares, strict=True):
        x -= s
        if x < 0:
            return c
    return candidates[-1]


class Balancer:
    """Picks deployments by strategy, skipping full ones; queues requests FIFO when
    every deployment of an alias is at ``max_parallel_requests``."""

    def __init__(self, strategy: str, health: Cooldowns, rng: random.Random) -> None:
        self.strategy = strategy
        self.health = health
        self.rng = rng
        self._waiters: dict[str, deque[Deferred[None]]] = {}

    def has_room(self, c: Candidate) -> bool:
        limit = c.max_parallel_requests
        return limit is None or self.health.get(c.id).in_flight < limit

    def choose(self, candidates: Sequence[Candidate]) -> Candidate | None:
        """One candidate with room, or None when all are full."""
        open_ = [c for c in candidates if self.has_room(c)]
        if not open_:
            return None
        if self.strategy == "least-busy":
            fewest = min(self.health.get(c.id).in_flight for c in open_)
            open_ = [c for c in open_ if self.health.get(c.id).in_flight == fewest]
            return open_[0] if len(open_) == 1 else self.rng.choice(open_)
        return simple_shuffle(open_, self.rng)

    def acquire(self, c: Candidate) -> Callable[[], None]:
        """Count a request in flight on ``c``; returns the (idempotent) release."""
        h = self.health.get(c.id)
        h.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            h.in_flight -= 1
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
