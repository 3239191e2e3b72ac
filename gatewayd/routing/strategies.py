"""Which strategy picks for an alias (its ``alias_settings`` one, else the general
``routing_strategy``), and the pool that applies it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

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


#: Pools kept for names a wildcard alias matched (beyond: start over).
MAX_LAZY_POOLS = 1024


class AliasPools(dict[str, AliasPool]):
    """The pools of a table's aliases, built at a swap; a name that a wildcard alias
    matches (:mod:`gatewayd.routing.wildcard`) gets its pool on first use, rebuilt when
    its routes change (a new listing)."""

    def __init__(
        self,
        routes: Mapping[str, Sequence[Candidate]],
        make: Callable[[str, Sequence[Candidate]], AliasPool],
    ) -> None:
        super().__init__()
        self._routes = routes
        self._make = make
        self._lazy: dict[str, tuple[Sequence[Candidate], AliasPool]] = {}

    def build(self, alias: str, routes: Sequence[Candidate]) -> None:
        """The pool of a configured alias (built at a swap)."""
        self[alias] = self._make(alias, routes)

    def __missing__(self, alias: str) -> AliasPool:
        routes = self._routes[alias]  # KeyError: not an alias, nor matched by a pattern
        cached = self._lazy.get(alias)
        if cached is not None and cached[0] is routes:
            return cached[1]
        if len(self._lazy) >= MAX_LAZY_POOLS:
            self._lazy.clear()
        # A name a wildcard alias matched is routed by the wildcard alias's settings.
        pattern_of: Mapping[str, str] = getattr(self._routes, "pattern_of", {})
        pool = self._make(pattern_of.get(alias, alias), routes)
        self._lazy[alias] = (routes, pool)
        return pool


def pools_for(
    routes: Mapping[str, Sequence[Candidate]],
    general: GeneralSettings,
    health: Cooldowns,
    latency: LatencyBook,
) -> AliasPools:
    """An empty :class:`AliasPools` for a table's ``routes``: fill it with ``build``."""
    return AliasPools(routes, lambda a, rs: make_pool(a, rs, health, general, latency))
