"""What the service runs for a fleet: the active health checks and model discovery,
retargeted at every reload."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent

from gatewayd.config.model import Deployment, GatewayConfig
from gatewayd.config.tls import TLSSettings
from gatewayd.fleet import probe
from gatewayd.fleet.discovery import Discoverer
from gatewayd.fleet.health_checks import HealthChecker, store_claim, targets
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    FailureKind,
    Provider,
    ProviderRequest,
    UpstreamFailure,
)
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.shared_cooldowns import SharedCooldowns
from gatewayd.routing.wildcard import Listings

#: The prompt of a completion probe.
PING = {"role": "user", "content": "ping"}


class FleetWatch:
    """Health checks and discovery over one service's upstream connection pools."""

    def __init__(
        self,
        health: Cooldowns,
        listings: Listings,
        clock: IReactorTime,
        agent_for: Callable[[str, TLSSettings], IAgent],
        make_provider: Callable[[Deployment], Provider],
        shared: SharedCooldowns | None = None,
    ) -> None:
        """``shared``: the cooldowns shared through the state store, when there is one
        (then one instance probes each deployment and all learn what it found)."""
        self.clock = clock
        self.agent_for = agent_for
        self.make_provider = make_provider
        self.health_checks = HealthChecker(
            health,
            clock,
            self.get,
            on_cooldown=None if shared is None else shared.publish,
            claim=None if shared is None else store_claim(shared.store, uuid.uuid4().hex),
            on_recovered=None if shared is None else shared.withdraw,
            complete=self.complete,
        )
        self._providers: dict[str, Provider] = {}
        self.discovery = Discoverer(listings, clock, self.get, probe.listing_url)

    def get(self, d: Deployment, url: str, timeout: float) -> Deferred[tuple[int, bytes]]:
        """GET ``url`` with ``d``'s credentials: fires with (status, body)."""
        return probe.get(self.agent_for, self.clock, d, url, timeout)

    def complete(self, d: Deployment, url: str, timeout: float) -> Deferred[tuple[int, bytes]]:
        """A one-token chat completion on ``d``: fires with (200, b"") or (the upstream's
        error status, b""); fails when nothing usable came back (refused, timeout)."""
        provider = self._providers.get(d.id)
        if provider is None:
            provider = self._providers[d.id] = self.make_provider(d)
        body = {"model": d.model_name, "messages": [PING], "max_tokens": 1, "stream": False}
        sent = provider.send(ProviderRequest(Endpoint.CHAT, body), AttemptLimits(timeout, timeout))

        def failed(f: Failure) -> tuple[int, bytes]:
            e = f.value
            if isinstance(e, UpstreamFailure) and e.kind is FailureKind.HTTP:
                return e.status, b""
            f.raiseException()
            raise AssertionError("unreachable")

        return sent.addCallbacks(lambda r: (r.status, b""), failed)

    def retarget(self, config: GatewayConfig) -> None:
        """Probe and list what ``config`` asks for (at start, and at every reload)."""
        self._providers.clear()
        self.health_checks.retarget(targets(config, probe.listing_url))
        self.discovery.retarget(config)

    def stop(self, *_: Any) -> None:
        self.health_checks.stop()
        self.discovery.stop()
