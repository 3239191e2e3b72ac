"""Hedged requests on a fake clock: a copy to another deployment after the delay, the
first answer wins and the loser is cancelled; the budget caps hedges under a slow fleet;
what is never hedged; the settings' errors."""

from __future__ import annotations

from typing import Any

import pytest
from fleet_harness import Fleet

from gatewayd.config import ConfigError, parse_config
from gatewayd.providers.base import Endpoint, ProviderRequest
from gatewayd.routing import RouteResult
from gatewayd.routing.hedge import MIN_SAMPLES, RollingMinute
from gatewayd.stages.limits import at_limit


def hedged(hedge: str, n: int = 2, params: str = "", alias_settings: str = "") -> str:
    entries = "".join(
        f"  - model_name: fleet\n"
        f"    params: {{model: openai/m, api_base: 'http://127.0.0.1:9/v1', api_key: k{params}}}\n"
        f"    model_info: {{id: r{i}}}\n"
        for i in range(n)
    )
    general = f"  hedge: {hedge}\n" if hedge else ""
    return f"model_list:\n{entries}general_settings:\n{general}{alias_settings}"


def send(fleet: Fleet, **kw: Any) -> list[Any]:
    box: list[Any] = []
    request = ProviderRequest(Endpoint.CHAT, {"model": "fleet"}, **kw)
    fleet.router.route("fleet", request).addBoth(box.append)
    return box


def counter(fleet: Fleet, name: str) -> float:
    text = fleet.router.metrics.render().decode()
    for line in text.splitlines():
        if line.startswith(f'gatewayd_hedges_{name}_total{{alias="fleet"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_hedge_wins_and_the_stalled_attempt_is_cancelled() -> None:
    fleet = Fleet(hedged("{after_ms: 200, budget_percent: 100}"), {"r0": 30.0, "r1": 30.0})
    box = send(fleet)
    first = next(r for r, p in fleet.providers.items() if p.calls)
    other = "r1" if first == "r0" else "r0"
    fleet.providers[other].delay = 0.05
    fleet.clock.pump([0.01] * 19)
    assert not fleet.providers[other].calls  # not before the delay
    fleet.clock.pump([0.01] * 2)
    assert len(fleet.providers[other].calls) == 1  # the hedge went out at 200 ms
    fleet.clock.pump([0.01] * 6)
    assert box and isinstance(box[0], RouteResult), box
    result = box[0]
    assert result.deployment == other and result.hedge == "hedge"
    assert result.attempts == 2
    assert fleet.providers[first].cancelled == 1  # its connection closed
    assert fleet.router.health.get(first).in_flight == 0
    assert fleet.router.health.get(first).failures == 0  # a loser is not a failure
    assert (counter(fleet, "sent"), counter(fleet, "won"), counter(fleet, "cancelled")) == (
        1,
        1,
        1,
    )


def test_a_fast_primary_sends_no_hedge() -> None:
    fleet = Fleet(hedged("{after_ms: 200, budget_percent: 100}"), {"r0": 0.05, "r1": 0.05})
    box = send(fleet)
    fleet.clock.pump([0.01] * 50)
    assert isinstance(box[0], RouteResult) and box[0].hedge == "primary"
    assert sum(len(p.calls) for p in fleet.providers.values()) == 1
    assert counter(fleet, "sent") == 0


def test_the_primary_can_still_win_after_the_hedge_went_out() -> None:
    fleet = Fleet(hedged("{after_ms: 100, budget_percent: 100}"), {"r0": 0.3, "r1": 0.3})
    box = send(fleet)
    fleet.clock.pump([0.01] * 60)
    result = box[0]
    assert isinstance(result, RouteResult) and result.hedge == "primary"
    loser = "r1" if result.deployment == "r0" else "r0"
    assert fleet.providers[loser].cancelled == 1
    assert (counter(fleet, "sent"), counter(fleet, "won"), counter(fleet, "cancelled")) == (
        1,
        0,
        1,
    )


def test_the_budget_caps_hedges_under_a_slow_fleet() -> None:
    fleet = Fleet(
        hedged("{after_ms: 50, budget_percent: 10}", n=3), {f"r{i}": 1.0 for i in range(3)}
    )
    results = []
    for _ in range(300):  # 30 s of requests, every one slow
        results.append(send(fleet))
        fleet.clock.pump([0.01] * 10)
    fleet.clock.pump([0.1] * 30)
    sent = counter(fleet, "sent")
    assert 0 < sent <= 0.1 * 300
    calls = sum(len(p.calls) for p in fleet.providers.values())
    assert calls == 300 + sent  # never more load than the budget allows
    assert all(isinstance(b[0], RouteResult) for b in results)


def test_rolling_minute() -> None:
    m = RollingMinute()
    for t in range(20):
        m.count_request(float(t))
    assert m.allows(20.0, 10.0) and m.allows(20.0, 5.0)
    m.count_hedge(20.0)
    m.count_hedge(20.0)
    assert not m.allows(20.0, 10.0)  # 3 of 20 would be 15 %
    assert m.allows(20.0, 15.0)
    # A minute later the old requests are gone, and so is the room they made.
    assert not m.allows(81.0, 100.0)


@pytest.mark.parametrize(
    ("kw", "alias_params"),
    [
        ({"hedge": False}, ""),  # the key is at its limit
        ({"pin": "r0"}, ""),  # only one deployment may answer
        ({}, ", rpm: 1000"),  # deployment limits: a copy would need its own admission
    ],
)
def test_never_hedged(kw: dict[str, Any], alias_params: str) -> None:
    fleet = Fleet(
        hedged("{after_ms: 10, budget_percent: 100}", params=alias_params), {"r0": 1.0, "r1": 1.0}
    )
    fleet.router.limiter = None
    box = send(fleet, **kw)
    fleet.clock.pump([0.05] * 40)
    assert isinstance(box[0], RouteResult), box
    assert sum(len(p.calls) for p in fleet.providers.values()) == 1
    assert box[0].hedge is None


def test_after_quantile_waits_for_samples_then_hedges_at_the_quantile() -> None:
    fleet = Fleet(hedged("{after_quantile: 0.9, budget_percent: 100}"), {"r0": 0.1, "r1": 0.1})
    for _ in range(MIN_SAMPLES):
        box = send(fleet)
        fleet.clock.pump([0.01] * 20)
        assert box[0].hedge is None  # no quantile yet: not hedged
    settings = fleet.router.table.config.general.hedge_for("fleet")
    assert settings is not None
    assert fleet.router.hedging.delay("fleet", settings) == pytest.approx(0.1, abs=0.02)
    box = send(fleet)
    fleet.clock.pump([0.01] * 20)
    assert box[0].hedge is not None  # enough samples: the race is on


def test_a_failing_primary_leaves_the_hedge_to_answer() -> None:
    fleet = Fleet(hedged("{after_ms: 100, budget_percent: 100}"), {"r0": 0.05, "r1": 0.05})
    for p in fleet.providers.values():
        p.delay = 0.5
    box = send(fleet)
    first = next(r for r, p in fleet.providers.items() if p.calls)
    other = "r1" if first == "r0" else "r0"
    fleet.providers[other].delay = 0.3
    fleet.clock.pump([0.01] * 15)  # the hedge is out
    assert len(fleet.providers[other].calls) == 1
    fleet.providers[first].fail_pending()  # the primary fails: the hedge may still answer
    assert not box
    fleet.clock.pump([0.01] * 50)
    assert isinstance(box[0], RouteResult), box
    assert box[0].deployment == other and box[0].hedge == "hedge"
    assert fleet.router.health.get(first).failures == 1  # its failure was booked
    assert fleet.router.health.get(first).in_flight == 0


def test_per_alias_hedge_overrides_the_general_one() -> None:
    text = hedged(
        "{after_ms: 100}",
        alias_settings="  alias_settings:\n    fleet: {hedge: {enabled: false}}\n",
    )
    g = parse_config(text, environ={}).general
    assert g.hedge is not None and g.hedge.after_ms == 100
    assert g.hedge_for("fleet") is None
    assert g.hedge_for("other") is g.hedge


@pytest.mark.parametrize(
    ("hedge", "path", "reason"),
    [
        ("5", "general_settings.hedge", "mapping"),
        ("{}", "general_settings.hedge", "exactly one of after_ms and after_quantile"),
        ("{after_ms: 1, after_quantile: 0.9}", "general_settings.hedge", "exactly one"),
        ("{after_ms: -1}", "general_settings.hedge.after_ms", "at least 0"),
        ("{after_quantile: 1.5}", "general_settings.hedge.after_quantile", "from 0.5 to 0.999"),
        ("{after_ms: 1, max_extra: 0}", "general_settings.hedge.max_extra", "from 1 to 4"),
        ("{after_ms: 1, budget_percent: 200}", "general_settings.hedge.budget_percent", "0 to 100"),
        ("{after_ms: 1, after: 2}", "general_settings.hedge.after", "unknown key"),
    ],
)
def test_hedge_errors_name_the_key(hedge: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(hedged(hedge), environ={})
    assert path in str(e.value) and reason in str(e.value)


def test_alias_hedge_errors_name_the_alias() -> None:
    text = hedged("", alias_settings="  alias_settings:\n    fleet: {hedge: {after_ms: x}}\n")
    with pytest.raises(ConfigError) as e:
        parse_config(text, environ={})
    assert "alias_settings.fleet.hedge.after_ms" in str(e.value)


def test_a_client_that_leaves_cancels_every_copy() -> None:
    fleet = Fleet(hedged("{after_ms: 100, budget_percent: 100}"), {"r0": 30.0, "r1": 30.0})
    d = fleet.router.route("fleet", ProviderRequest(Endpoint.CHAT, {"model": "fleet"}))
    d.addErrback(lambda f: None)
    fleet.clock.pump([0.01] * 30)
    assert all(len(p.calls) == 1 for p in fleet.providers.values())
    d.cancel()
    for dep, p in fleet.providers.items():
        assert p.cancelled == 1
        assert fleet.router.health.get(dep).in_flight == 0


def test_a_key_that_used_the_last_of_its_limit_is_not_hedged() -> None:
    remaining = (b"x-ratelimit-limit-requests", b"10"), (b"x-ratelimit-remaining-requests", b"3")
    assert not at_limit(remaining)
    assert at_limit(((b"x-ratelimit-remaining-tokens", b"0"),))
    assert not at_limit(())
