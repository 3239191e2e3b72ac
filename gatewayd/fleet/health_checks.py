"""Active health checks: a cheap GET to each deployment, on a schedule, so that a
down deployment is found before a client request is sent to it, and a cooldown ends
as soon as the deployment answers again.

Which deployments: every one with an ``api_base`` when
``general_settings.health_check_interval`` (or LiteLLM's ``background_health_checks``)
is set, and those with ``params.health_check`` in any case. The probe is the provider's
model listing (``GET {api_base}/models``, Ollama's ``/api/tags``) or the configured
``path``. A probe that cannot connect, times out, or gets a 5xx (or 408/429) puts the
deployment in cooldown at once (``cooldown_time``, shared through the state store like
any cooldown); a 2xx ends a cooldown or a run of failures. Other answers (401, 404: a
wrong path or key) change nothing: they are logged once.

Probes are spread in time (each deployment's first one at a random point of its
interval, then every interval, 10 % jitter) and at most :data:`CONCURRENCY` run at once.
With a state store, one instance probes each deployment (:func:`store_claim`: the
first to claim it, until it stops) and every instance learns the outcome through the
shared cooldowns.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from gatewayd.config.fleet import DEFAULT_PROBE_TIMEOUT
from gatewayd.config.model import Deployment, GatewayConfig
from gatewayd.observability.log import get_logger
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.state.base import StateStore

log = get_logger(__name__)

#: Probes in flight at most, whatever the number of deployments.
CONCURRENCY = 8
#: Each interval is stretched or shrunk by up to this share, so probes do not align.
JITTER = 0.1
#: HTTP statuses that mean "down" (as for a client request: retried kinds).
DOWN_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})

#: Sends one probe: fires with the HTTP status (fails: no answer).
Probe = Callable[[Deployment, str, float], Deferred[tuple[int, bytes]]]


@dataclass(frozen=True)
class Target:
    """One deployment to probe: where, how often, for how long."""

    deployment: Deployment
    url: str
    interval: float
    timeout: float
    #: Probe with a one-token chat completion (``params.health_check.completion``).
    completion: bool = False


def targets(config: GatewayConfig, listing_url: Callable[[Deployment], str]) -> list[Target]:
    """The deployments ``config`` asks to probe."""
    general = config.general.health_check_interval
    out = []
    for d in config.deployments:
        check = d.health_check
        if d.api_base is None or (check is None and general <= 0):
            continue
        interval = (check.interval if check is not None else None) or general or 30.0
        url = listing_url(d) if check is None or check.path is None else d.api_base + check.path
        timeout = check.timeout if check is not None else DEFAULT_PROBE_TIMEOUT
        completion = check is not None and check.completion
        out.append(Target(d, url, interval, min(timeout, interval), completion))
    return out


class HealthChecker:
    """Probes the targets of the config in force; :meth:`retarget` on every reload."""

    def __init__(
        self,
        health: Cooldowns,
        clock: IReactorTime,
        probe: Probe,
        on_cooldown: Callable[[str, float], None] | None = None,
        rng: random.Random | None = None,
        claim: Callable[[str, float], Deferred[bool]] | None = None,
        on_recovered: Callable[[str], None] | None = None,
        complete: Probe | None = None,
    ) -> None:
        self.health = health
        self.clock = clock
        self.probe = probe
        #: Sends the one-token completion of ``completion`` targets (None: a GET instead).
        self.complete = complete
        #: Told when a probe puts a deployment in cooldown (the router's: to share it).
        self.on_cooldown = on_cooldown
        #: With a state store: whether this instance probes a deployment this time (one
        #: instance probes, every instance learns the outcome); None: always.
        self.claim = claim
        #: Told when a probe ends a cooldown early (to withdraw the shared one).
        self.on_recovered = on_recovered
        self.rng = rng or random.Random()
        self.semaphore = DeferredSemaphore(CONCURRENCY)
        self._timers: dict[str, IDelayedCall] = {}
        self._targets: dict[str, Target] = {}
        self._warned: set[str] = set()
        self.probes_sent = 0

    def retarget(self, found: list[Target]) -> None:
        """Probe ``found`` from now on: new ones start at a random point of their interval,
        ones that stay keep their schedule, the others stop."""
        new = {t.deployment.id: t for t in found}
        for dep_id in list(self._timers):
            if dep_id not in new:
                timer = self._timers.pop(dep_id)
                if timer.active():
                    timer.cancel()
        for dep_id, t in new.items():
            if dep_id not in self._timers:
                self._schedule(dep_id, self.rng.uniform(0.0, t.interval))
        self._targets = new

    def stop(self) -> None:
        self.retarget([])

    def _schedule(self, dep_id: str, delay: float) -> None:
        self._timers[dep_id] = self.clock.callLater(delay, self._due, dep_id)

    def _due(self, dep_id: str) -> None:
        t = self._targets.get(dep_id)
        if t is None:
            self._timers.pop(dep_id, None)
            return
        spread = 1.0 + self.rng.uniform(-JITTER, JITTER)
        self._schedule(dep_id, t.interval * spread)
        if self.claim is None:
            self.semaphore.run(self._probe, t)
            return

        def claimed(mine: bool) -> None:
            if mine:
                self.semaphore.run(self._probe, t)

        self.claim(dep_id, t.interval).addCallback(claimed)

    def _probe(self, t: Target) -> Deferred[None]:
        """Fires (never fails) when the probe has been judged."""
        self.probes_sent += 1
        send = self.complete if t.completion and self.complete is not None else self.probe
        try:
            d = send(t.deployment, t.url, t.timeout)
        except Exception as e:  # a URL the agent refuses: as a failed probe
            d = Deferred()
            d.errback(e)
        return d.addCallbacks(lambda r: self._answered(t, r[0]), lambda f: self._failed(t, f))

    def _answered(self, t: Target, status: int) -> None:
        dep_id = t.deployment.id
        if 200 <= status < 300:
            h = self.health.get(dep_id)
            cooling = h.cooling(self.health.now())
            if cooling or h.consecutive_fails:
                log.info("health check: {dep} is answering again", dep=dep_id)
                self.health.success(dep_id)  # ends the cooldown, resets the count
            if cooling and self.on_recovered is not None:
                self.on_recovered(dep_id)
            return
        if status in DOWN_STATUSES:
            self._down(t, f"health check: HTTP {status}", status)
            return
        if dep_id not in self._warned:
            self._warned.add(dep_id)
            log.warn(
                "health check of {dep} answered {status}: check params.health_check.path "
                "and the key; the deployment is not marked down for it",
                dep=dep_id,
                status=status,
            )

    def _failed(self, t: Target, failure: Failure) -> None:
        reason = failure.getErrorMessage() or type(failure.value).__name__
        self._down(t, f"health check: {type(failure.value).__name__}: {reason}"[:300], None)

    def _down(self, t: Target, message: str, status: int | None) -> None:
        dep_id = t.deployment.id
        h = self.health.get(dep_id)
        was_cooling = h.cooling(self.health.now())
        # One failed probe is enough: a probe is not a client request that a retry saves.
        h.consecutive_fails = max(h.consecutive_fails, self.health.allowed_fails)
        tripped = self.health.failure(dep_id, message, status, transient=True)
        if tripped and not was_cooling:
            log.warn("health check: {dep} is down ({why})", dep=dep_id, why=message)
        if tripped and self.on_cooldown is not None:
            self.on_cooldown(dep_id, h.cooldown_until)


def store_claim(store: StateStore, instance: str) -> Callable[[str, float], Deferred[bool]]:
    """Claims on the state store: a deployment is probed by the instance that claimed
    it, for as long as it keeps probing (the claim lasts 1.5 intervals); a store that
    cannot be reached leaves every instance probing."""

    def claim(deployment_id: str, interval: float) -> Deferred[bool]:
        key = f"health_probe:{deployment_id}"

        def decide(holder: str | None) -> bool | Deferred[bool]:
            if holder is not None and holder != instance:
                return False
            return store.set(key, instance, interval * 1.5).addCallback(lambda _: True)

        d: Deferred[bool] = store.get(key).addCallback(decide)
        return d.addErrback(lambda _: True)

    return claim
