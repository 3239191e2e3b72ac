"""Which strategy picks for an alias (its ``alias_settings`` one, else the general
``routing_strategy``), and the pool that applies it."""

from __future__ import annotations

from collections.abc import Sequence

from gatewayd.config.model import GeneralSettings
from gatewayd.routing.affinity import AffinityChooser
from gatewayd.routing.balancer import Candidate
from gatewayd.routing.choice import Chooser
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.latency import LatencyBook, LatencyChooser
from gatewayd.routing.pool import AliasPool

LATENCY = "latency-based-routing"
AFFINITY = "prefix-affinity"


def strategy_for(general: GeneralSettings, alias: str) -> str:
    """``alias``'s strategy: its own, else the general one."""
    return general.for_alias(alias).routing_strategy or general.routing_strategy


def make_pool(
    alias: str,
    routes: Sequence[Candidate],
    health: Cooldowns,
    general: GeneralSettings,
    latency: LatencyBook,
) -> AliasPool:
    """The pool of ``alias``'s ``routes``, picking by the alias's strategy."""
    strategy = strategy_for(general, alias)
    chooser: Chooser | None = None
    if strategy == LATENCY:
        chooser = LatencyChooser(latency, [r.id for r in routes])
    elif strategy == AFFINITY:
        chooser = AffinityChooser([r.id for r in routes])
    return AliasPool(routes, health, strategy, chooser)
