"""The routing table: aliases, their deployments with provider clients, their fallbacks.

Immutable: built from one :class:`GatewayConfig`, swapped whole on reload.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gatewayd.config.model import Deployment, GatewayConfig
from gatewayd.config.pace import pace
from gatewayd.providers.base import Provider


@dataclass(frozen=True)
class Route:
    """One deployment as the router sees it: its config and its client."""

    deployment: Deployment
    provider: Provider

    @property
    def id(self) -> str:
        return self.deployment.id

    @property
    def model_name(self) -> str:
        return self.deployment.model_name

    @property
    def weight(self) -> float | None:
        return self.deployment.weight

    @property
    def rpm(self) -> int | None:
        return self.deployment.rpm

    @property
    def max_parallel_requests(self) -> int | None:
        return self.deployment.max_parallel_requests


@dataclass(frozen=True)
class RoutingTable:
    """Everything a request needs to be routed, from one config."""

    config: GatewayConfig
    routes: Mapping[str, tuple[Route, ...]]

    def origin(self, alias: str) -> str:
        """The configured alias ``alias`` comes from: itself, or the wildcard alias that
        matched it (``ollama/*`` for ``ollama/llama3``)."""
        pattern_of: Mapping[str, str] = getattr(self.routes, "pattern_of", {})
        return pattern_of.get(alias, alias)

    def fallbacks_for(self, alias: str) -> tuple[str, ...]:
        """The alias's own fallbacks (a wildcard name: its pattern's), else
        ``default_fallbacks``; never itself."""
        g = self.config.general
        chain = g.fallbacks.get(alias)
        if chain is None:
            chain = g.fallbacks.get(self.origin(alias))
        if chain is None:
            chain = g.default_fallbacks
        return tuple(a for a in chain if a != alias)

    def context_window_fallbacks_for(self, alias: str) -> tuple[str, ...]:
        return tuple(
            a for a in self.config.general.context_window_fallbacks.get(alias, ()) if a != alias
        )


def build_table(
    config: GatewayConfig, make_provider: Callable[[Deployment], Provider]
) -> RoutingTable:
    """A table with one provider client per deployment."""
    routes: dict[str, list[Route]] = {}
    for d in config.deployments:
        pace()
        routes.setdefault(d.model_name, []).append(Route(d, make_provider(d)))
    return RoutingTable(config, MappingProxyType({k: tuple(v) for k, v in routes.items()}))
