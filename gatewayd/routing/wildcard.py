"""Wildcard aliases: ``model_name: "ollama/*"`` (or ``"*"``) routes any name it matches
to its deployments, the ``*`` of ``params.model`` replaced by what the name's ``*``
matched (``ollama/llama3`` -> upstream model ``llama3``).

An exact alias wins over any pattern; among patterns the longest wins (and when its
deployments do not have the model, the next one is tried). With ``params.discover``
a deployment serves only the models its upstream lists (:class:`Listings`, filled by
:mod:`gatewayd.fleet.discovery`): a name no deployment lists is not found (404), with no
upstream call. Before a deployment's first listing, it serves any name.

The routes of a name are built on first use, with their own provider client, and kept
(at most :data:`MAX_NAMES` per table; a new listing starts over).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

from gatewayd.config.model import Deployment
from gatewayd.providers.base import Provider
from gatewayd.routing.table import Route, RoutingTable

#: Names whose routes are kept per table (each a provider client): beyond, start over.
MAX_NAMES = 1024


def is_pattern(name: str) -> bool:
    return "*" in name


class Listings:
    """What each discovering deployment's upstream lists, by deployment id."""

    def __init__(self) -> None:
        self._by_deployment: dict[str, frozenset[str]] = {}
        #: Bumped at every change: the tables' built routes are then rebuilt.
        self.version = 0

    def record(self, deployment_id: str, models: frozenset[str]) -> bool:
        """Record a listing; True when it changed."""
        if self._by_deployment.get(deployment_id) == models:
            return False
        self._by_deployment[deployment_id] = models
        self.version += 1
        return True

    def get(self, deployment_id: str) -> frozenset[str] | None:
        return self._by_deployment.get(deployment_id)

    def retain_only(self, ids: set[str]) -> None:
        for k in [k for k in self._by_deployment if k not in ids]:
            del self._by_deployment[k]
            self.version += 1


class Pattern:
    """One wildcard alias and its deployments."""

    def __init__(self, name: str, routes: tuple[Route, ...]) -> None:
        self.name = name
        self.routes = routes
        # Each * matches anything (slashes too); the first one is the model's part.
        self.regex = re.compile("^" + "(.*)".join(map(re.escape, name.split("*"))) + "$")

    def capture(self, name: str) -> str | None:
        m = self.regex.match(name)
        if m is None:
            return None
        return m.group(1) if m.groups() else ""

    def expand(self, model: str) -> str:
        """The client-facing name of upstream ``model`` (its first * replaced)."""
        return self.name.replace("*", model, 1)


def upstream_model(d: Deployment, captured: str) -> str:
    return d.model.replace("*", captured) if "*" in d.model else d.model


def serves(d: Deployment, model: str, listings: Listings) -> bool:
    """A discovering deployment serves what its upstream lists (anything before its first
    listing); the others serve any name."""
    if not d.discover:
        return True
    listed = listings.get(d.id)
    if listed is None or model in listed:
        return True
    # Ollama takes "llama3" for "llama3:latest", the name it lists.
    return d.provider.prefix == "ollama" and ":" not in model and f"{model}:latest" in listed


class WildcardRoutes(Mapping[str, tuple[Route, ...]]):
    """A routing table's routes: the exact aliases, and any name a pattern matches.

    Iterating gives the configured names (patterns included, for ``/health``); ``in``
    is True for exact aliases and for the names a pattern serves, never for a pattern
    itself (``"ollama/*"`` is not a model a client may send)."""

    def __init__(
        self,
        exact: Mapping[str, tuple[Route, ...]],
        make_provider: Callable[[Deployment], Provider],
        listings: Listings,
    ) -> None:
        self._exact = exact
        self._make = make_provider
        self.listings = listings
        self.patterns = sorted(
            (Pattern(n, r) for n, r in exact.items() if is_pattern(n)),
            key=lambda p: len(p.name),
            reverse=True,
        )
        self._built: dict[str, tuple[Route, ...] | None] = {}
        self._version = listings.version
        #: The pattern each built name came from.
        self.pattern_of: dict[str, str] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(self._exact)

    def __len__(self) -> int:
        return len(self._exact)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self._exact:
            return not is_pattern(name)
        return self._resolve(name) is not None

    def __getitem__(self, name: str) -> tuple[Route, ...]:
        routes = self._exact.get(name)
        if routes is None:
            routes = self._resolve(name)
            if routes is None:
                raise KeyError(name)
        return routes

    def _resolve(self, name: str) -> tuple[Route, ...] | None:
        if self._version != self.listings.version or len(self._built) >= MAX_NAMES:
            self._built.clear()
            self.pattern_of.clear()
            self._version = self.listings.version
        if name in self._built:
            return self._built[name]
        found: tuple[Route, ...] | None = None
        for p in self.patterns:
            captured = p.capture(name)
            if captured is None:
                continue
            routes = []
            for r in p.routes:
                d = r.deployment
                model = upstream_model(d, captured)
                if model and serves(d, model, self.listings):
                    concrete = replace(d, model_name=name, model=model)
                    routes.append(Route(concrete, self._make(concrete)))
            if routes:
                found = tuple(routes)
                self.pattern_of[name] = p.name
                break
        self._built[name] = found
        return found

    def discovered(self) -> list[str]:
        """The client-facing names of every model the discovering deployments list."""
        out: list[str] = []
        for p in self.patterns:
            for r in p.routes:
                listed = self.listings.get(r.id)
                if listed is None:
                    continue
                head, star, tail = r.deployment.model.partition("*")
                if not star:
                    continue
                for model in sorted(listed):
                    if model.startswith(head) and model.endswith(tail):
                        out.append(p.expand(model[len(head) : len(model) - len(tail)]))
        return list(dict.fromkeys(out))


def with_wildcards(
    table: RoutingTable, make_provider: Callable[[Deployment], Provider], listings: Listings
) -> RoutingTable:
    """``table`` with its wildcard aliases in force (unchanged when it has none)."""
    if not any(is_pattern(alias) for alias in table.routes):
        return table
    return replace(table, routes=WildcardRoutes(table.routes, make_provider, listings))
