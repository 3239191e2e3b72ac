"""Per-deployment health: a circuit breaker over consecutive transient failures.

The states live outside the immutable routing table, keyed by deployment id, so
that a reload keeps what is known about upstreams that stay.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime


class Watcher(Protocol):
    """An index over deployments (an alias's pool) that follows their state."""

    def changed(self, deployment_id: str) -> None: ...


@dataclass
class DeploymentHealth:
    """What is known about one deployment right now.

    Change ``cooldown_until`` and ``in_flight`` through :class:`Cooldowns`, which tells
    the watchers (the pools that index this deployment).
    """

    consecutive_fails: int = 0
    cooldown_until: float = 0.0
    in_flight: int = 0
    last_error: str | None = None
    last_error_status: int | None = None
    successes: int = 0
    failures: int = 0
    #: Told of cooldown changes; ``busy_watchers`` of in-flight changes too. Weak
    #: references: a pool of a replaced table goes away with its last request.
    watchers: list[weakref.ref[Watcher]] = field(default_factory=list, repr=False, compare=False)
    busy_watchers: list[weakref.ref[Watcher]] = field(
        default_factory=list, repr=False, compare=False
    )

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until

    def snapshot(self, now: float) -> dict[str, Any]:
        """For ``/health``: no secrets here by construction."""
        return {
            "state": "cooldown" if self.cooling(now) else "healthy",
            "cooldown_remaining_s": round(max(0.0, self.cooldown_until - now), 3),
            "consecutive_fails": self.consecutive_fails,
            "in_flight": self.in_flight,
            "successes": self.successes,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_status": self.last_error_status,
        }


@dataclass
class Cooldowns:
    """Health of every deployment, with the breaker's rules."""

    clock: IReactorTime
    allowed_fails: int = 3
    cooldown_time: float = 30.0
    states: dict[str, DeploymentHealth] = field(default_factory=dict)

    def get(self, deployment_id: str) -> DeploymentHealth:
        h = self.states.get(deployment_id)
        if h is None:
            h = self.states[deployment_id] = DeploymentHealth()
        return h

    def now(self) -> float:
        return self.clock.seconds()

    def is_cooling(self, deployment_id: str) -> bool:
        h = self.states.get(deployment_id)
        return h is not None and h.cooling(self.now())

    def changed(self, deployment_id: str, busy: bool = False) -> None:
        """Tell the watchers of a deployment that its cooldown (or, ``busy``, its
        in-flight count) changed."""
        h = self.states.get(deployment_id)
        if h is None:
            return
        refs = h.busy_watchers if busy else h.watchers
        dead = False
        for ref in refs:
            w = ref()
            if w is None:
                dead = True
            else:
                w.changed(deployment_id)
        if dead:
            refs[:] = [r for r in refs if r() is not None]
        if not busy and h.busy_watchers:
            self.changed(deployment_id, busy=True)

    def add_in_flight(self, deployment_id: str, delta: int) -> None:
        self.get(deployment_id).in_flight += delta
        self.changed(deployment_id, busy=True)

    def success(self, deployment_id: str) -> None:
        h = self.get(deployment_id)
        h.consecutive_fails = 0
        was_cooling, h.cooldown_until = h.cooldown_until, 0.0
        h.successes += 1
        if was_cooling:
            self.changed(deployment_id)

    def failure(
        self,
        deployment_id: str,
        message: str,
        status: int | None,
        *,
        transient: bool,
        retry_after: float | None = None,
    ) -> bool:
        """Record a failed attempt; True when it put the deployment in cooldown."""
        h = self.get(deployment_id)
        h.failures += 1
        h.last_error = message[:300]
        h.last_error_status = status
        if not transient:
            return False
        h.consecutive_fails += 1
        if h.consecutive_fails > self.allowed_fails:
            length = retry_after if retry_after is not None else self.cooldown_time
            # The count stays up: a failed probe after the cooldown re-trips at once.
            h.cooldown_until = self.now() + length
            self.changed(deployment_id)
            return length > 0
        return False

    def retain_only(self, ids: set[str]) -> None:
        """Forget deployments a reload removed."""
        for k in list(self.states):
            if k not in ids:
                del self.states[k]

    def prune_watchers(self) -> None:
        """Drop the references to pools that are gone (after a reload): O(deployments)."""
        for _ in self.pruning_watchers(step=0):
            pass

    def pruning_watchers(self, step: int) -> Iterator[None]:
        """:meth:`prune_watchers`, yielding after every ``step`` deployments (0: never)."""
        for n, h in enumerate(list(self.states.values()), 1):
            h.watchers[:] = [r for r in h.watchers if r() is not None]
            h.busy_watchers[:] = [r for r in h.busy_watchers if r() is not None]
            if step and n % step == 0:
                yield
