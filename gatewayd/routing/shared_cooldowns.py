"""Cooldowns shared through the state store: a deployment one instance found down is
skipped by every instance.

Each instance publishes the cooldowns it trips (a lease per deployment, expiring when
the cooldown ends) and reads everyone's once a second; a cooldown read from the store
is applied to the local breaker. Local cooldowns keep working while the store is down.
A cooldown ended early (an active health check found the deployment back) is withdrawn
from the store, and the instances that had it from the store end theirs too.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from gatewayd.observability.log import get_logger
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.state.base import LeaseTake, StateStore

log = get_logger(__name__)

KEY = "cooldowns"
#: More deployments than any table holds: the lease set never refuses.
_UNBOUNDED = 1 << 30


class SharedCooldowns:
    """Publishes this instance's cooldowns and applies the others'."""

    def __init__(
        self,
        store: StateStore,
        health: Cooldowns,
        clock: IReactorTime,
        known: Callable[[], set[str]],
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.health = health
        self.clock = clock
        self.known = known
        self.interval = interval
        self._loop: LoopingCall | None = None
        #: Deployments cooling down here because the store said so.
        self._from_store: set[str] = set()

    def publish(self, deployment_id: str, until: float) -> None:
        """Called by the router when this instance trips a cooldown."""
        ttl = until - self.clock.seconds()
        if ttl <= 0:
            return
        d = self.store.take([LeaseTake(KEY, _UNBOUNDED, deployment_id, ttl, abandon=False)])
        d.addErrback(self._lost)

    def withdraw(self, deployment_id: str) -> None:
        """The deployment is back before its cooldown ended: tell the others."""
        self.store.release(KEY, deployment_id).addErrback(self._lost)

    def sync(self) -> None:
        """Read every instance's cooldowns once; apply those longer than ours."""
        d = self.store.members(KEY)

        def apply(members: dict[str, float]) -> None:
            known = self.known()
            for dep, until in members.items():
                if dep not in known:
                    continue
                h = self.health.get(dep)
                if until > h.cooldown_until + 0.001:
                    h.cooldown_until = until
                    # A failed probe after it ends trips again here too.
                    h.consecutive_fails = max(h.consecutive_fails, self.health.allowed_fails + 1)
                    h.last_error = "cooling down (reported by another gateway instance)"
                    self.health.changed(dep)  # the routing pools index cooldowns
                    self._from_store.add(dep)
            if not getattr(self.store, "up", True):
                return  # a store in failover has only this instance's: nothing withdrawn
            now = self.clock.seconds()
            for dep in [d for d in self._from_store if d not in members]:
                self._from_store.discard(dep)
                h = self.health.get(dep)
                if h.cooling(now):  # withdrawn early by the instance that found it back
                    h.cooldown_until = 0.0
                    h.consecutive_fails = 0
                    self.health.changed(dep)

        d.addCallbacks(apply, self._lost)

    def _lost(self, f: Failure) -> None:
        log.debug("shared cooldowns: {err}", err=f.getErrorMessage())

    def start(self) -> None:
        self._loop = LoopingCall(self.sync)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
