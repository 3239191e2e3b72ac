"""Wildcard aliases in the routing table: exact beats wildcard, the longest pattern
wins, the model is rewritten, a pattern is never a model, discovery's listings decide
what is served; the listing formats."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from fleet_harness import TimedProvider
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from gatewayd.config import ConfigError, Deployment, parse_config
from gatewayd.fleet.discovery import Discoverer, parse_listing
from gatewayd.fleet.probe import listing_url
from gatewayd.providers.base import Endpoint, Provider, ProviderRequest
from gatewayd.routing import Router, RouteResult, build_table
from gatewayd.routing.affinity import AffinityChooser
from gatewayd.routing.wildcard import Listings, WildcardRoutes, with_wildcards

CONFIG = """
model_list:
  - model_name: ollama/llama3
    params: {model: openai/exact-llama, api_base: "http://10.0.0.9:8000/v1", api_key: k}
    model_info: {id: exact}
  - model_name: "ollama/*"
    params: {model: "ollama/*", api_base: "http://10.0.0.1:11434", discover: true}
    model_info: {id: box1}
  - model_name: "ollama/*"
    params: {model: "ollama/*", api_base: "http://10.0.0.2:11434", discover: true}
    model_info: {id: box2}
  - model_name: "ollama/qwen*"
    params: {model: "ollama/qwen*", api_base: "http://10.0.0.3:11434"}
    model_info: {id: qwenbox}
  - model_name: "*"
    params: {model: "openai/*", api_base: "http://10.0.0.4/v1", api_key: k}
    model_info: {id: anything}
general_settings:
  fallbacks: [{"ollama/*": ["ollama/llama3"]}]
"""


class Table:
    def __init__(self, text: str = CONFIG, delay: float = 0.01) -> None:
        self.clock = Clock()
        self.listings = Listings()
        self.built: list[Deployment] = []

        def make(d: Deployment) -> Provider:
            self.built.append(d)
            return TimedProvider(d, self.clock, delay)

        config = parse_config(text, environ={})
        self.table = with_wildcards(build_table(config, make), make, self.listings)
        self.router = Router(self.table, self.clock, random.Random(2))

    @property
    def routes(self) -> WildcardRoutes:
        assert isinstance(self.table.routes, WildcardRoutes)
        return self.table.routes

    def upstream(self, name: str) -> set[tuple[str, str]]:
        return {(r.id, r.deployment.model) for r in self.routes[name]}


def test_exact_beats_wildcard_and_the_longest_pattern_wins() -> None:
    t = Table()
    assert t.upstream("ollama/llama3") == {("exact", "exact-llama")}
    assert t.upstream("ollama/mistral") == {("box1", "mistral"), ("box2", "mistral")}
    assert t.upstream("ollama/qwen2.5:7b") == {("qwenbox", "qwen2.5:7b")}
    assert t.upstream("gpt-4o-mini") == {("anything", "gpt-4o-mini")}  # "*": any name
    assert t.upstream("org/team/model") == {("anything", "org/team/model")}
    # A pattern is not a model a client may send; names are what clients route by.
    assert "ollama/*" not in t.routes and "*" not in t.routes
    assert "ollama/mistral" in t.routes
    assert t.table.fallbacks_for("ollama/mistral") == ("ollama/llama3",)  # its pattern's


def test_discovery_decides_what_is_served() -> None:
    t = Table(CONFIG.replace('  - model_name: "*"', '  - model_name: "unused/*"'))
    assert "ollama/phi3" in t.routes  # before any listing: served
    t.listings.record("box1", frozenset({"llama3.2:latest", "phi3:mini"}))
    t.listings.record("box2", frozenset({"phi3:mini"}))
    assert "ollama/phi3" not in t.routes  # listed by neither: 404, no upstream call
    assert t.upstream("ollama/phi3:mini") == {("box1", "phi3:mini"), ("box2", "phi3:mini")}
    assert t.upstream("ollama/llama3.2") == {("box1", "llama3.2")}  # Ollama's :latest
    assert t.upstream("ollama/llama3.2:latest") == {("box1", "llama3.2:latest")}
    # /v1/models shows what was found, under the pattern, never the pattern.
    assert t.routes.discovered() == ["ollama/llama3.2:latest", "ollama/phi3:mini"]
    # A new listing takes effect at once.
    t.listings.record("box2", frozenset({"phi3:mini", "gemma3"}))
    assert t.upstream("ollama/gemma3") == {("box2", "gemma3")}


def test_a_wildcard_name_is_routed_with_its_model_rewritten() -> None:
    t = Table()
    t.built.clear()  # the clients of the configured deployments
    box: list[object] = []
    request = ProviderRequest(Endpoint.CHAT, {"model": "ollama/mistral"})
    t.router.route("ollama/mistral", request).addBoth(box.append)
    t.clock.advance(1.0)
    result = box[0]
    assert isinstance(result, RouteResult), result
    assert result.alias == "ollama/mistral" and result.deployment in ("box1", "box2")
    assert {d.model for d in t.built} == {"mistral"}  # the clients built for the name
    # The second request for the name reuses its routes and pool.
    n = len(t.built)
    t.router.route("ollama/mistral", request).addBoth(box.append)
    t.clock.advance(1.0)
    assert len(t.built) == n and isinstance(box[1], RouteResult)


def test_tables_without_patterns_are_unchanged() -> None:
    text = "model_list:\n  - model_name: a\n    params: {model: mock/a}\n"
    t = Table(text)
    assert not isinstance(t.table.routes, WildcardRoutes)


@pytest.mark.parametrize(
    "body",
    [
        {"object": "list", "data": [{"id": "llama3", "object": "model"}, {"id": "qwen2"}]},
        {"models": [{"name": "llama3", "model": "llama3"}, {"name": "qwen2"}]},
        [{"id": "llama3"}, {"id": "qwen2"}],
    ],
)
def test_listing_formats(body: object) -> None:
    assert parse_listing(json.dumps(body).encode()) == {"llama3", "qwen2"}


def test_bad_listings_are_refused() -> None:
    for bad in (b"<html>", b'{"error": "x"}', b"42"):
        with pytest.raises(ValueError):
            parse_listing(bad)


@pytest.mark.parametrize(
    ("entry", "path", "reason"),
    [
        (
            "{model_name: a, params: {model: openai/m, api_base: 'http://h/v1', discover: true}}",
            "params.discover",
            "wildcard",
        ),
        (
            "{model_name: 'x/*', params: {model: 'openai/*', api_base: 'http://h/v1', discover: 1}}",
            "params.discover",
            "true or false",
        ),
        (
            "{model_name: 'x/*', params: {model: 'openai/*', api_base: 'http://h/v1', "
            "discover: true, discover_interval: 0}}",
            "params.discover_interval",
            "",
        ),
    ],
)
def test_discover_errors_name_the_key(entry: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(f"model_list:\n  - {entry}\n", environ={})
    assert path in str(e.value) and reason in str(e.value)


def test_a_key_may_name_a_wildcard_alias() -> None:
    text = CONFIG + "keys:\n  - {name: team, key: sk-team-1, models: ['ollama/*']}\n"
    config = parse_config(text, environ={})
    key = config.keys.keys[0]
    assert key.allows("ollama/mistral") and key.allows("ollama/*")
    assert not key.allows("gpt-4o")


def test_a_wildcard_alias_settings_apply_to_its_names() -> None:
    text = (
        CONFIG
        + '  alias_settings:\n    "ollama/*": {routing_strategy: prefix-affinity,'
        + " hedge: {after_ms: 100, budget_percent: 100}}\n"
    )
    t = Table(text, delay=0.5)
    assert isinstance(t.router._pools["ollama/mistral"].chooser, AffinityChooser)
    assert t.router._pools["gpt-4o"].chooser is None  # "*" has no settings of its own
    box: list[object] = []
    request = ProviderRequest(Endpoint.CHAT, {"model": "ollama/mistral"})
    t.router.route("ollama/mistral", request).addBoth(box.append)
    t.clock.pump([0.05] * 20)
    result = box[0]
    assert isinstance(result, RouteResult), result
    assert result.hedge == "primary" and result.attempts == 2  # a copy went to the other box


def test_discoverer_lists_every_interval_keeps_the_last_good_listing_and_forgets() -> None:
    clock = Clock()
    listings = Listings()
    answers: dict[str, Any] = {"box1": (200, b'{"models": [{"name": "llama3:latest"}]}')}
    asked: list[tuple[str, str]] = []

    def get(d: Deployment, url: str, timeout: float) -> Deferred[tuple[int, bytes]]:
        asked.append((d.id, url))
        answer = answers.get(d.id, ConnectionRefusedError("down"))
        return fail(answer) if isinstance(answer, Exception) else succeed(answer)

    disco = Discoverer(listings, clock, get, listing_url, random.Random(1))
    config = parse_config(
        CONFIG.replace("discover: true}", "discover: true, discover_interval: 5}"), environ={}
    )
    disco.retarget(config)
    clock.advance(0.3)  # at start
    assert ("box1", "http://10.0.0.1:11434/api/tags") in asked
    assert listings.get("box1") == frozenset({"llama3:latest"}) and listings.get("box2") is None
    answers["box1"] = (500, b"oops")  # a bad listing keeps the last good one
    clock.advance(5.0)
    assert listings.get("box1") == frozenset({"llama3:latest"})
    answers["box1"] = (200, b'{"data": [{"id": "phi3"}]}')
    clock.advance(5.0)
    assert listings.get("box1") == frozenset({"phi3"})
    # A reload lists again at once; a deployment no longer discovering is forgotten.
    n = len(asked)
    disco.retarget(parse_config(CONFIG.replace("discover: true", "discover: false", 1), environ={}))
    assert listings.get("box1") is None
    clock.advance(0.3)
    assert {dep for dep, _ in asked[n:]} == {"box2"}
    disco.stop()
