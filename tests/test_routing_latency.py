"""``routing_strategy: latency-based-routing`` on a fake clock with scripted latencies:
a replica turning slow loses its traffic within seconds and gets it back once it has
recovered; a new or recovered deployment starts at the alias's median; the estimates
are in ``/health`` and a gauge."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest
from fleet_harness import Fleet, config
from twisted.internet.task import Clock

from gatewayd.providers.base import Endpoint, ProviderRequest
from gatewayd.routing.latency import PER_TOKEN, TTFB, LatencyBook, LatencyChooser, output_tokens
from gatewayd.web.health import HealthLayout


def test_a_replica_turning_slow_loses_traffic_within_seconds_and_gets_it_back() -> None:
    fleet = Fleet(config(), {})
    warm = fleet.run(20)
    assert all(warm[f"r{i}"] > 40 for i in range(3)), warm  # about even while all are fast

    fleet.providers["r2"].delay = 1.0  # r2 turns slow
    t0 = fleet.clock.seconds()
    fleet.run(20)
    late = Counter(dep for t, dep in fleet.served if t > t0 + 3.0)
    # Within 3 s r2 gets only the odd probe; the fast replicas take the rest.
    assert late["r2"] <= 0.05 * sum(late.values()), late

    fleet.providers["r2"].delay = 0.05  # r2 recovers
    t1 = fleet.clock.seconds()
    fleet.run(30)
    back = Counter(dep for t, dep in fleet.served if t > t1 + 15.0)
    assert back["r2"] >= 0.2 * sum(back.values()), back


def test_simple_shuffle_keeps_sending_to_the_slow_replica() -> None:
    """The contrast: the default strategy keeps a third of the traffic on it."""
    fleet = Fleet(config("simple-shuffle"), {"r2": 1.0})
    got = fleet.run(20)
    assert got["r2"] > 0.25 * sum(got.values())


def test_in_flight_counts_weigh_on_the_score() -> None:
    """Equal latencies: the replica with requests piling up is avoided (latency x (n+1))."""
    book = LatencyBook(Clock())
    for dep in ("a", "b"):
        book.observe(dep, PER_TOKEN, 0.01)

    class Pool:
        routes: list[Any] = []
        open_count = 2
        total_in_flight = 4

        def is_open(self, i: int) -> bool:
            return True

        def in_flight(self, i: int) -> int:
            return 4 if i == 0 else 0

        def random_open(self, rng: random.Random, but: int | None = None) -> int:
            return 1 if but == 0 else 0

    chooser = LatencyChooser(book, ["a", "b"])
    assert chooser.choose(Pool(), random.Random(1), None) == 1


def test_new_and_recovered_deployments_start_at_the_median() -> None:
    clock = Clock()
    book = LatencyBook(clock)
    chooser = LatencyChooser(book, ["a", "b", "c", "new"])
    for dep, x in (("a", 0.1), ("b", 0.2), ("c", 0.9)):
        book.observe(dep, TTFB, x)
    median = chooser.median(TTFB, clock.seconds())
    assert median == 0.2
    assert book.estimate("new", TTFB, median) == 0.2
    # c goes into cooldown: its slow past is forgotten; back, it is scored at the median.
    book.after_failure("c", True, clock.seconds(), tripped=True)
    assert book.raw("c", TTFB) is None
    clock.advance(2.0)  # the median is recomputed at most every second
    assert chooser.median(TTFB, clock.seconds()) == pytest.approx(0.15)
    assert book.estimate("c", TTFB, 0.15) == 0.15


def test_peak_ewma_jumps_up_and_decays_down() -> None:
    clock = Clock()
    book = LatencyBook(clock, decay=10.0)
    book.observe("a", TTFB, 0.1)
    clock.advance(1.0)
    book.observe("a", TTFB, 2.0)
    assert book.raw("a", TTFB) == 2.0  # a peak is believed at once
    clock.advance(10.0)
    book.observe("a", TTFB, 0.1)
    value = book.raw("a", TTFB)
    assert value is not None and 0.1 < value < 1.0  # and forgotten smoothly
    # An estimate nobody refreshed for the decay window is probed once per window, and
    # the probe's measure replaces it.
    assert not book.take_probe("a", TTFB, clock.seconds() + 9.0)
    assert book.take_probe("a", TTFB, clock.seconds() + 10.0)
    assert not book.take_probe("a", TTFB, clock.seconds() + 11.0)
    clock.advance(10.5)
    book.observe("a", TTFB, 0.1)
    assert book.raw("a", TTFB) == 0.1
    book.observe("a", TTFB, 0.3)
    book.observe("a", TTFB, 0.1)
    assert book.raw("a", TTFB) == 0.3  # no time passed: the peak holds
    # A timeout-like failure counts as a peak; a fast refusal does not lower it.
    book.after_failure("a", True, clock.seconds() - 5.0, tripped=False)
    assert book.raw("a", TTFB) == 5.0
    book.after_failure("a", True, clock.seconds() - 0.001, tripped=False)
    assert book.raw("a", TTFB) == 5.0


def test_json_latency_is_per_output_token_and_streams_by_first_byte() -> None:
    assert output_tokens(b'{"usage": {"completion_tokens": 40}}') == 40
    assert output_tokens(b'{"usage": {"output_tokens": 7}}') == 7
    assert output_tokens(b'{"usage": null}') is None
    book = LatencyBook(Clock())
    book.observe_success("a", False, 2.0, b'{"usage": {"completion_tokens": 40}}')
    assert book.raw("a", PER_TOKEN) is None  # not a deployment that routes by latency
    book.tracked.add("a")
    book.observe_success("a", False, 2.0, b'{"usage": {"completion_tokens": 40}}')
    book.observe_success("a", True, 0.3, None)
    assert book.raw("a", PER_TOKEN) == 0.05
    assert book.raw("a", TTFB) == 0.3


def test_per_alias_strategy_health_and_gauge() -> None:
    text = config(
        "simple-shuffle",
        extra="  alias_settings:\n    fleet: {routing_strategy: latency-based-routing}\n",
    )
    fleet = Fleet(text, {"r0": 0.02, "r1": 0.02, "r2": 0.5})
    assert fleet.router._pools["fleet"].chooser is not None
    fleet.run(5)
    for r in ("r0", "r1"):
        value = fleet.router.latency.raw(r, PER_TOKEN)
        # 0.02 s / 10 tokens, give or take the fake clock's 10 ms steps
        assert value is not None and 0.0015 < value < 0.0035
    text, _ = HealthLayout(fleet.router.table).models(fleet.router.health, fleet.router.latency)
    doc = json.loads(text)
    dep = doc["fleet"]["deployments"][0]
    r0 = fleet.router.latency.raw("r0", PER_TOKEN)
    assert r0 is not None
    assert dep["latency_per_token_s"] == round(r0, 6) and dep["latency_ttfb_s"] is None
    metrics = fleet.router.metrics.render().decode()
    series = 'gatewayd_deployment_latency_seconds{alias="fleet",deployment="r0",kind="per_token"}'
    assert f"{series} {r0!r}" in metrics


def test_a_cooldown_resets_the_estimate() -> None:
    fleet = Fleet(config(n=2), {"r0": 0.05, "r1": 0.05})
    fleet.run(3)
    assert fleet.router.latency.raw("r1", PER_TOKEN) is not None
    fleet.providers["r1"].fail_next = 100
    fleet.providers["r0"].fail_next = 100
    # Four transient failures in a row trip a cooldown (allowed_fails 3).
    for _ in range(20):
        fleet.router.route("fleet", ProviderRequest(Endpoint.CHAT, {"model": "fleet"})).addErrback(
            lambda f: None
        )
        fleet.clock.advance(0.1)
    for r in ("r0", "r1"):
        assert fleet.router.health.is_cooling(r)
        assert fleet.router.latency.raw(r, PER_TOKEN) is None
