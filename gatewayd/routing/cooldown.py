"""Per-deployment health: a circuit breaker over consecutive transient failures.

The states live outside the immutable routing table, keyed by deployment id, so
that a reload keeps what is known about upstreams that stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime


@dataclass
class DeploymentHealth:
    """What is known about one deployment right now."""

    consecutive_fails: int = 0
    cooldown_until: float = 0.0
    in_flight: int = 0
    last_error: str | None = None
    last_error_status: int | None = None
    successes: int = 0
    failures: int = 0

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

    def success(self, deployment_id: str) -> None:
        h = self.get(deployment_id)
        h.consecutive_fails = 0
        h.cooldown_until = 0.0
        h.successes += 1

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
            return length > 0
        return False

    def retain_only(self, ids: set[str]) -> None:
        """Forget deployments a reload removed."""
        for k in list(self.states):
            if k not in ids:
                del self.states[k]
