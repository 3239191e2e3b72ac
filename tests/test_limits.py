# ruff: noqa: F811 - the store fixtures are imported, then used as parameters
"""Every limit and budget rule on a fake clock, against the memory store and a real
redis-server (the ``env`` fixture runs each test on both)."""

from __future__ import annotations

from typing import Any

import pytest
from test_state_store import deferred_test, env, redis_server  # noqa: F401 - fixtures
from twisted.internet.task import Clock

from gatewayd.config.catalog import lookup
from gatewayd.config.keys import Budget, ClientKey, digest
from gatewayd.config.model import Deployment
from gatewayd.limits import Estimate, Limiter, LimitExceeded, Spent, cost, estimate, format_reset
from gatewayd.state import StateStore

Env = tuple[StateStore, Clock, str]


def key(ns: str, **kw: Any) -> ClientKey:
    return ClientKey(name=ns + "team", digest=digest(ns), **kw)


def deployment(ns: str, **kw: Any) -> Deployment:
    info = lookup("openai")
    assert info is not None
    return Deployment("a", ns + "dep", info, "m", "http://127.0.0.1:1", **kw)


async def refused(d: Any) -> LimitExceeded:
    try:
        await d
    except LimitExceeded as e:
        return e
    raise AssertionError("admitted")


SMALL = Estimate(10, 90)


@deferred_test
async def test_key_rpm_refuses_the_next_request_until_the_minute_is_over(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, rpm=3)
    for i in range(3):
        t = await lim.admit_key(k, SMALL)
        assert dict(t.headers)[b"x-ratelimit-remaining-requests"] == b"%d" % (2 - i)
    clock.advance(20)
    e = await refused(lim.admit_key(k, SMALL))
    r = e.refusal
    assert (r.what, r.scope, r.name, r.limit) == ("requests", "key", ns + "team", 3)
    assert r.retry_after == pytest.approx(40)
    h = dict(r.headers)
    assert h[b"x-ratelimit-limit-requests"] == b"3"
    assert h[b"x-ratelimit-remaining-requests"] == b"0"
    assert h[b"x-ratelimit-reset-requests"] == b"40s"
    clock.advance(40)
    await lim.admit_key(k, SMALL)


@deferred_test
async def test_key_tpm_reserves_then_settles_so_overshoot_is_one_reservation(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, tpm=1000)
    t1 = await lim.admit_key(k, Estimate(100, 500))
    t1.settle(Spent(100, 20))  # used 120 of the 600 reserved
    t2 = await lim.admit_key(k, Estimate(100, 500))
    t3 = await lim.admit_key(k, Estimate(100, 500))  # 720 < 1000: admitted, now 1320
    e = await refused(lim.admit_key(k, Estimate(1, 1)))
    assert e.refusal.what == "tokens"
    assert dict(e.refusal.headers)[b"x-ratelimit-remaining-tokens"] == b"0"
    t2.settle(Spent(10, 10))
    t3.settle(Spent(10, 10))  # 120 + 20 + 20
    t4 = await lim.admit_key(k, Estimate(1, 1))
    assert dict(t4.headers)[b"x-ratelimit-remaining-tokens"] == b"%d" % (1000 - 162)


@deferred_test
async def test_settle_is_idempotent(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, tpm=1000)
    t = await lim.admit_key(k, Estimate(100, 100))
    t.settle(Spent(10, 10))
    t.settle(Spent(0, 0))
    info = await lim.key_info(k)
    assert info["tpm"]["remaining"] == 980


@deferred_test
async def test_max_parallel_requests_per_key(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, max_parallel_requests=2)
    a = await lim.admit_key(k, SMALL)
    await lim.admit_key(k, SMALL)
    e = await refused(lim.admit_key(k, SMALL))
    assert e.refusal.what == "parallel_requests" and e.refusal.retry_after == 1
    a.settle(Spent(1, 1))  # a finished: its slot is free
    await lim.admit_key(k, SMALL)


@deferred_test
async def test_usd_budget_until_the_period_rolls_over(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, budget=Budget(None, 0.05, 86400, "1d"))
    price_in, price_out = 0.0001, 0.0002
    spent_total = 0.0
    for _ in range(100):
        try:
            t = await lim.admit_key(k, SMALL, usd=cost(10, 90, price_in, price_out))
        except LimitExceeded as e:
            r = e.refusal
            break
        usd = cost(10, 60, price_in, price_out)
        spent_total += usd
        t.settle(Spent(10, 60), usd)
    else:
        raise AssertionError("never refused")
    assert r.budget and r.what == "budget_usd"
    assert spent_total >= 0.05 and spent_total < 0.05 + cost(10, 90, price_in, price_out)
    info = await lim.key_info(k)
    assert info["spend"]["usd"] == pytest.approx(spent_total)
    assert info["budget"]["remaining_usd"] == 0
    clock.advance(86400)
    await lim.admit_key(k, SMALL, usd=0.001)
    assert (await lim.key_info(k))["spend"]["usd"] == pytest.approx(0.001)


@deferred_test
async def test_token_budget(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, budget=Budget(500, None, 3600, "1h"))
    t = await lim.admit_key(k, Estimate(100, 400))
    t.settle(Spent(100, 450))
    e = await refused(lim.admit_key(k, SMALL))
    assert e.refusal.what == "budget_tokens"
    assert e.refusal.retry_after == pytest.approx(3600)
    assert "budget exceeded" in e.refusal.message()


@deferred_test
async def test_a_request_no_deployment_served_gives_its_rpm_back(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, rpm=1)
    t = await lim.admit_key(k, SMALL)
    t.settle(None, served=False)
    await lim.admit_key(k, SMALL)


@deferred_test
async def test_deployment_rpm_and_tpm(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    assert await lim.admit_deployment(deployment(ns), SMALL) is None  # no limits: no store call
    d = deployment(ns, rpm=10, tpm=150)
    await lim.admit_deployment(d, SMALL)
    await lim.admit_deployment(d, SMALL)  # 100 < 150: admitted, now 200
    e = await refused(lim.admit_deployment(d, SMALL))
    assert (e.refusal.scope, e.refusal.what) == ("deployment", "tokens")
    clock.advance(60)
    d2 = deployment(ns + "2", rpm=2)
    t = await lim.admit_deployment(d2, SMALL)
    assert t is not None
    t.settle(Spent(1, 1))
    await lim.admit_deployment(d2, SMALL)
    e = await refused(lim.admit_deployment(d2, SMALL))
    assert e.refusal.what == "requests" and e.refusal.name == ns + "2dep"


@deferred_test
async def test_key_info_reports_limits_and_what_is_left(env: Env) -> None:
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, rpm=10, tpm=1000, max_parallel_requests=3, budget=Budget(None, 1.0, 86400, "1d"))
    t = await lim.admit_key(k, Estimate(50, 50), usd=0.01)
    t.settle(Spent(40, 20), 0.006)
    info = await lim.key_info(k)
    assert info["rpm"] == {"limit": 10, "remaining": 9, "resets_in_s": 60.0}
    assert info["tpm"]["remaining"] == 940
    assert info["max_parallel_requests"] == {"limit": 3, "remaining": 3, "in_use": 0}
    assert info["budget"]["remaining_usd"] == pytest.approx(0.994)
    assert info["spend"]["tokens"] == 60 and info["spend"]["usd"] == pytest.approx(0.006)


def test_estimate_counts_prompt_characters_and_max_tokens() -> None:
    body = {"model": "a", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    assert estimate(body) == Estimate(101, 50)  # "user" counts too
    assert estimate({"prompt": "abcd"}).completion == 1024
    assert estimate({"input": "abcd", "max_output_tokens": 7, "n": 2}) == Estimate(1, 14)
    # Tool and output schemas are input the provider counts too.
    schema = {"type": "json_schema", "json_schema": {"name": "x" * 396}}
    assert estimate({"messages": [], "response_format": schema}).prompt == 102
    assert estimate({"functions": [{"name": "f" * 400}]}).prompt == 100
    assert Spent.from_usage({"input_tokens": 3, "output_tokens": 4}) == Spent(3, 4)
    assert Spent.from_usage(None) is None and Spent.from_usage({}) is None


def test_reset_format_is_openais() -> None:
    assert [format_reset(s) for s in (0.02, 1, 59.2, 360, 3723)] == [
        "20ms",
        "1s",
        "1m0s",
        "6m0s",
        "1h2m3s",
    ]


def test_spent_counts_every_input_token_in_each_dialect_and_prices_the_cache() -> None:
    # Anthropic: input_tokens leaves out cache reads and writes; they are added.
    ant = {
        "input_tokens": 13,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
        "output_tokens": 6,
    }
    assert Spent.from_usage(ant) == Spent(133, 6, 100, 20)
    # OpenAI Chat and Responses: the totals already count them.
    chat = {
        "prompt_tokens": 111,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert Spent.from_usage(chat) == Spent(111, 5, 100, 0)
    resp = {"input_tokens": 111, "output_tokens": 5, "input_tokens_details": {"cached_tokens": 100}}
    assert Spent.from_usage(resp) == Spent(111, 5, 100, 0)
    # Cache prices when set, else the input price.
    assert cost(133, 6, 0.001, 0.002, 100, 20, 0.0001, 0.00125) == pytest.approx(0.06)
    assert cost(133, 6, 0.001, 0.002, 100, 20) == pytest.approx(0.145)
