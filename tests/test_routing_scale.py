"""Routing at scale: a pick's work does not grow with the alias's deployments (counted,
not timed: speed is in bench/routing_scale.py), and the incremental index the picks
use always agrees with the deployments' real state."""

from __future__ import annotations

import gc
import random
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from test_routing import Harness, conf, entry, outcome
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock

from gatewayd.config import Deployment, parse_config
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    FailureKind,
    Provider,
    ProviderRequest,
    UpstreamFailure,
    UpstreamResponse,
    openai_error,
)
from gatewayd.routing import Route, Router, RouteResult, build_table
from gatewayd.routing.cooldown import Cooldowns, DeploymentHealth
from gatewayd.routing.pool import AliasPool

# -- the work per request is independent of the number of deployments ---------------


class EveryOtherFails(Provider):
    """Odd attempts (counted over all deployments) fail with a 503: one retry each."""

    def __init__(self, deployment: Deployment, calls: list[int], flaky: bool) -> None:
        super().__init__(deployment)
        self.calls = calls
        self.flaky = flaky

    def send(self, request: ProviderRequest, limits: AttemptLimits) -> Deferred[UpstreamResponse]:
        self.calls[0] += 1
        if self.flaky and self.calls[0] % 2:
            return fail(UpstreamFailure(FailureKind.HTTP, 503, openai_error("busy")))
        return succeed(UpstreamResponse(200, body=b"{}"))


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Counts every read of a deployment's routing properties and health checks."""
    counts: Counter[str] = Counter()
    for name in ("id", "weight", "rpm", "max_parallel_requests", "model_name"):
        prop = getattr(Route, name)

        def counted(self: Route, _get: Any = prop.fget, _name: str = name) -> Any:
            counts[_name] += 1
            return _get(self)

        monkeypatch.setattr(Route, name, property(counted))
    cooling = DeploymentHealth.cooling

    def counted_cooling(self: DeploymentHealth, now: float) -> bool:
        counts["cooling"] += 1
        return cooling(self, now)

    monkeypatch.setattr(DeploymentHealth, "cooling", counted_cooling)
    yield counts


def work_for(n: int, extra: str, general: str, flaky: bool, reads: Counter[str]) -> int:
    entries = [entry("a", f"d{i}", extra) for i in range(n)]
    cfg = parse_config(conf(entries, "  allowed_fails: 1000000\n" + general), environ={})
    calls = [0]
    clock = Clock()
    router = Router(
        build_table(cfg, lambda d: EveryOtherFails(d, calls, flaky)), clock, random.Random(7)
    )
    request = ProviderRequest(Endpoint.CHAT, {"model": "a"})
    reads.clear()
    for _ in range(50):
        result = outcome(router.route("a", request))
        assert isinstance(result, RouteResult)
        clock.advance(10)  # past any backoff
    return sum(reads.values())


@pytest.mark.parametrize(
    ("extra", "general", "flaky"),
    [
        ("", "", False),
        (", weight: 2", "", False),
        ("", "  routing_strategy: least-busy\n", False),
        (", max_parallel_requests: 3", "", False),
        ("", "  num_retries: 1\n", True),
        ("", "  num_retries: 1\n  routing_strategy: least-busy\n", True),
    ],
    ids=["even", "weights", "least-busy", "max-parallel", "retry", "retry-least-busy"],
)
def test_a_request_reads_no_more_deployments_with_1000_than_with_10(
    extra: str, general: str, flaky: bool, reads: Counter[str]
) -> None:
    small = work_for(10, extra, general, flaky, reads)
    large = work_for(1000, extra, general, flaky, reads)
    assert small > 0
    assert large == small, (small, large)


# -- the index agrees with the real state -----------------------------------------------


@dataclass(frozen=True)
class Dep:
    id: str
    model_name: str
    weight: float | None
    rpm: int | None
    max_parallel_requests: int | None


def brute_open(deps: list[Dep], health: Cooldowns) -> list[str]:
    now = health.now()
    return [
        d.id
        for d in deps
        if not health.get(d.id).cooling(now)
        and (
            d.max_parallel_requests is None or health.get(d.id).in_flight < d.max_parallel_requests
        )
    ]


@pytest.mark.parametrize("strategy", ["simple-shuffle", "least-busy"])
@pytest.mark.parametrize("seed", range(4))
def test_the_pool_follows_cooldowns_expiries_and_slots(strategy: str, seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    health = Cooldowns(clock, allowed_fails=0, cooldown_time=5.0)
    deps = [
        Dep(
            f"d{i}",
            "a",
            rng.choice([None, 1.0, 2.5]),
            rng.choice([None, 10]),
            rng.choice([None, 1, 2]),
        )
        for i in range(60)
    ]
    pool = AliasPool(deps, health, strategy)
    for _ in range(3000):
        d = rng.choice(deps).id
        op = rng.random()
        if op < 0.2:
            health.failure(d, "x", 503, transient=True, retry_after=rng.choice([None, 1.0, 9.0]))
        elif op < 0.3:
            health.success(d)
        elif op < 0.6:
            health.add_in_flight(d, 1)
        elif op < 0.85:
            if health.get(d).in_flight:
                health.add_in_flight(d, -1)
        else:
            clock.advance(rng.choice([0.5, 2.0, 6.0]))
        pool.refresh()
        expected = brute_open(deps, health)
        assert pool.open_ids() == expected
        now = health.now()
        healthy = [x for x in deps if not health.get(x.id).cooling(now)]
        assert pool.healthy_count == len(healthy)
        if not healthy:
            first = min(deps, key=lambda x: health.get(x.id).cooldown_until)
            assert pool.soonest() is first
        tried = {x.id for x in rng.sample(deps, rng.choice([0, 1, 3]))}
        untried = [x for x in expected if x not in tried]
        choice = pool.choose(tried, rng)
        if not expected:
            assert choice is None
            continue
        assert choice is not None
        candidates = untried or expected
        assert choice.id in candidates
        if strategy == "least-busy":
            fewest = min(health.get(x).in_flight for x in candidates)
            assert health.get(choice.id).in_flight == fewest
        elif any(next(x for x in deps if x.id == c).weight for c in candidates):
            assert choice.weight
        assert pool.open_ids() == expected  # the tried ones were put back


def test_weighted_picks_among_1000_follow_weights_and_skip_cooling_ones() -> None:
    clock = Clock()
    health = Cooldowns(clock, allowed_fails=0, cooldown_time=30.0)
    deps = [Dep(f"d{i}", "a", 3.0 if i % 2 else 1.0, None, None) for i in range(1000)]
    pool = AliasPool(deps, health, "simple-shuffle")
    for i in range(0, 1000, 5):
        health.failure(f"d{i}", "x", 503, transient=True)
    rng = random.Random(3)
    picks = Counter(pool.choose(set(), rng).id for _ in range(20000))  # type: ignore[union-attr]
    assert not any(int(d[1:]) % 5 == 0 for d in picks)
    heavy = sum(c for d, c in picks.items() if int(d[1:]) % 2)
    assert 0.72 <= heavy / 20000 <= 0.78  # 3/4 of the weight
    clock.advance(31)
    pool.refresh()
    assert len(pool.open_ids()) == 1000


def test_without_weighted_candidates_left_the_pick_is_even_among_the_rest() -> None:
    health = Cooldowns(Clock(), allowed_fails=0)
    deps = [Dep("w1", "a", 5.0, None, None), Dep("w2", "a", 5.0, None, None)]
    deps += [Dep(f"u{i}", "a", None, None, None) for i in range(3)]
    pool = AliasPool(deps, health, "simple-shuffle")
    rng = random.Random(1)
    assert {pool.choose(set(), rng).id for _ in range(200)} <= {"w1", "w2"}  # type: ignore[union-attr]
    picks = Counter(pool.choose({"w1", "w2"}, rng).id for _ in range(3000))  # type: ignore[union-attr]
    assert set(picks) == {"u0", "u1", "u2"} and min(picks.values()) > 900


def test_a_replaced_tables_pool_goes_with_its_last_request() -> None:
    h = Harness(conf([entry("a", "a1", ", max_parallel_requests: 1")]), {"a1": [5.0]})
    old = weakref.ref(h.router._pools["a"])
    first = h.route("a")  # holds the old pool while it waits on the upstream
    cfg = parse_config(conf([entry("a", "a1", ", max_parallel_requests: 1")]), environ={})
    h.router.swap(build_table(cfg, lambda d: h.providers["a1"]))
    gc.collect()
    assert old() is not None
    queued = h.route("a")  # the new pool sees a1 full: it waits for the slot
    assert h.calls("a1") == 1
    h.clock.advance(5)
    assert isinstance(outcome(first), RouteResult) and isinstance(outcome(queued), RouteResult)
    gc.collect()
    assert old() is None
    assert len(h.router.health.get("a1").busy_watchers) == 2  # cleaned on the next change
    outcome(h.route("a"))
    assert len(h.router.health.get("a1").busy_watchers) == 1


def test_cancelled_waiters_do_not_pile_up_and_the_queue_stays_fifo() -> None:
    h = Harness(conf([entry("a", "a1", ", max_parallel_requests: 1")]), {"a1": [5.0, 1.0, 1.0]})
    first = h.route("a")
    waiting = [h.route("a") for _ in range(1000)]
    queue = h.router.balancer.waiters["a"]
    assert len(queue) == 1000
    for d in waiting[:-2]:  # clients that went away
        d.cancel()
        assert isinstance(outcome(d), CancelledError)
    assert len(queue) <= 4  # compacted as it went, not 998 dead entries
    order: list[int] = []
    waiting[-2].addCallback(lambda _: order.append(1))
    waiting[-1].addCallback(lambda _: order.append(2))
    h.clock.advance(5)
    assert isinstance(outcome(first), RouteResult)
    h.clock.advance(1)
    assert order == [1]
    h.clock.advance(1)
    assert order == [1, 2] and len(queue) == 0
