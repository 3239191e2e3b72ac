"""Which routes of an alias serve an endpoint (``params.api_endpoints``), worked out
once per table and alias: the common case, all of them, costs one dict lookup."""

from __future__ import annotations

from gatewayd.providers.base import Endpoint
from gatewayd.providers.capabilities import serves
from gatewayd.routing.table import Route, RoutingTable

#: Entries kept (names matched by wildcard aliases are many): beyond, start over.
MAX_ENTRIES = 4096


class ServingIndex:
    """(alias, endpoint) to the routes serving it, for the current table."""

    def __init__(self) -> None:
        self._table: RoutingTable | None = None
        #: (alias, endpoint) -> (the alias's routes then, those serving the endpoint)
        self._cache: dict[tuple[str, Endpoint], tuple[tuple[Route, ...], tuple[Route, ...]]] = {}

    def only(self, table: RoutingTable, alias: str, endpoint: Endpoint) -> tuple[Route, ...] | None:
        """The routes of ``alias`` that serve ``endpoint`` when some do not (maybe none);
        None when all do (the alias's own pool serves)."""
        if self._table is not table or len(self._cache) >= MAX_ENTRIES:
            self._table, self._cache = table, {}
        key = (alias, endpoint)
        cached = self._cache.get(key)
        routes = table.routes.get(alias, ())
        # The routes of a name a wildcard alias matched are rebuilt on a new listing.
        if cached is None or cached[0] is not routes:
            hit = tuple(r for r in routes if serves(r.deployment, endpoint))
            if len(hit) == len(routes):
                hit = routes
            cached = self._cache[key] = (routes, hit)
        hit = cached[1]
        return None if hit is routes else hit

    def any(self, table: RoutingTable, alias: str, endpoint: Endpoint) -> bool:
        """Whether some deployment of ``alias`` serves ``endpoint``."""
        partial = self.only(table, alias, endpoint)
        return partial is None or bool(partial)
