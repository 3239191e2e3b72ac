"""What the service runs for a fleet: the active health checks and model discovery,
retargeted at every reload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IAgent

from gatewayd.config.model import Deployment, GatewayConfig
from gatewayd.config.tls import TLSSettings
from gatewayd.fleet import probe
from gatewayd.fleet.discovery import Discoverer
from gatewayd.fleet.health_checks import HealthChecker, targets
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.wildcard import Listings


class FleetWatch:
    """Health checks and discovery over one service's upstream connection pools."""

    def __init__(
        self,
        health: Cooldowns,
        listings: Listings,
        clock: IReactorTime,
        agent_for: Callable[[str, TLSSettings], IAgent],
        on_cooldown: Callable[[str, float], None],
    ) -> None:
        self.clock = clock
        self.agent_for = agent_for
        self.health_checks = HealthChecker(health, clock, self.get, on_cooldown=on_cooldown)
        self.discovery = Discoverer(listings, clock, self.get, probe.listing_url)

    def get(self, d: Deployment, url: str, timeout: float) -> Deferred[tuple[int, bytes]]:
        """GET ``url`` with ``d``'s credentials: fires with (status, body)."""
        return probe.get(self.agent_for, self.clock, d, url, timeout)

    def retarget(self, config: GatewayConfig) -> None:
        """Probe and list what ``config`` asks for (at start, and at every reload)."""
        self.health_checks.retarget(targets(config, probe.listing_url))
        self.discovery.retarget(config)

    def stop(self, *_: Any) -> None:
        self.health_checks.stop()
        self.discovery.stop()
