"""The StateStore rules, run against both stores: memory on a fake clock, and a real
redis-server (with the same fake clock driving the windows)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar, cast

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from gatewayd.config.redis_address import RedisAddress
from gatewayd.state import LeaseTake, MemoryStore, StateStore, WindowTake
from gatewayd.state.redis import RedisStore
from gatewayd.testing.redis import RedisServer, redis_available

F = TypeVar("F", bound=Callable[..., Any])
#: pytest-twisted is untyped: typed aliases keep mypy --strict on the tests.
deferred_test = cast(Callable[[F], F], pytest_twisted.ensureDeferred)
store_fixture = cast(Callable[..., Callable[[F], F]], pytest_twisted.async_yield_fixture)

needs_redis = pytest.mark.skipif(not redis_available(), reason="redis-server not installed")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server not installed")
    with RedisServer() as server:
        yield server


async def _connected(store: RedisStore) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(200):  # bounded: 10 s
        if store.connected:
            return
        await deferLater(reactor, 0.05)
    raise AssertionError("no connection to the test redis-server")


_n = [0]


@store_fixture(params=["memory", "redis"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[tuple[StateStore, Clock, str]]:
    clock = Clock()
    clock.advance(1_700_000_000)
    _n[0] += 1
    ns = f"t{_n[0]}:"  # each test its own keys on the shared server
    if request.param == "memory":
        yield MemoryStore(clock), clock, ns
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    store = RedisStore(RedisAddress.parse(server.url), clock, timeout=5)
    await _connected(store)
    yield store, clock, ns
    await store.close()


def w(key: str, limit: float | None, amount: float = 1, window: float = 60) -> WindowTake:
    return WindowTake(key, limit, amount, window)


@deferred_test
async def test_window_admits_up_to_the_limit_then_refuses_until_it_closes(
    env: tuple[StateStore, Clock, str],
) -> None:
    store, clock, ns = env
    for i in range(3):
        r = await store.take([w(ns + "rpm", 3)])
        assert r.ok and r.usage[0].used == i + 1
    opened = r.usage[0].start
    assert r.usage[0].reset_at == pytest.approx(opened + 60)
    clock.advance(59)
    refused = await store.take([w(ns + "rpm", 3)])
    assert not refused.ok and refused.refused == 0
    assert refused.usage[0].used == 3 and refused.usage[0].remaining == 0
    assert refused.usage[0].reset_at - clock.seconds() == pytest.approx(1)
    clock.advance(1)
    again = await store.take([w(ns + "rpm", 3)])
    assert again.ok and again.usage[0].used == 1
    assert again.usage[0].start == pytest.approx(clock.seconds())


@deferred_test
async def test_take_is_all_or_nothing(env: tuple[StateStore, Clock, str]) -> None:
    store, _, ns = env
    assert (await store.take([w(ns + "b", 1)])).ok
    r = await store.take([w(ns + "a", 10), w(ns + "b", 1)])
    assert not r.ok and r.refused == 1
    (a,) = await store.peek([w(ns + "a", 10)])
    assert a.used == 0  # the first counter was not touched


@deferred_test
async def test_overshoot_is_bounded_by_one_reservation(
    env: tuple[StateStore, Clock, str],
) -> None:
    store, _, ns = env
    admitted = 0
    for _ in range(10):
        admitted += (await store.take([w(ns + "tpm", 1000, 300)])).ok
    (u,) = await store.peek([w(ns + "tpm", 1000)])
    assert admitted == 4 and u.used == 1200  # below the limit admits; 1200 < 1000 + 300


@deferred_test
async def test_settle_corrects_the_reservation_in_its_own_window_only(
    env: tuple[StateStore, Clock, str],
) -> None:
    store, clock, ns = env
    r = await store.take([w(ns + "tpm", 1000, 500)])
    await store.settle(ns + "tpm", r.usage[0].start, -380)
    (u,) = await store.peek([w(ns + "tpm", 1000)])
    assert u.used == 120
    clock.advance(61)
    await store.settle(ns + "tpm", r.usage[0].start, 900)  # that window is gone
    (u,) = await store.peek([w(ns + "tpm", 1000)])
    assert u.used == 0


@deferred_test
async def test_fractional_amounts_add_up(env: tuple[StateStore, Clock, str]) -> None:
    store, _, ns = env
    for _ in range(3):
        await store.take([w(ns + "usd", 1.0, 0.0125, 86400)])
    (u,) = await store.peek([w(ns + "usd", 1.0, 0, 86400)])
    assert u.used == pytest.approx(0.0375)


@deferred_test
async def test_unlimited_window_only_counts(env: tuple[StateStore, Clock, str]) -> None:
    store, _, ns = env
    for _ in range(5):
        assert (await store.take([w(ns + "spend", None, 2)])).ok
    (u,) = await store.peek([w(ns + "spend", None)])
    assert u.used == 10 and u.remaining is None


@deferred_test
async def test_leases_hold_slots_until_released_or_expired(
    env: tuple[StateStore, Clock, str],
) -> None:
    store, clock, ns = env

    def lease(n: str) -> LeaseTake:
        return LeaseTake(ns + "par", 2, n, 30)

    assert (await store.take([lease("a")])).ok
    assert (await store.take([lease("b")])).ok
    refused = await store.take([lease("c")])
    assert not refused.ok and refused.usage[0].used == 2
    await store.release(ns + "par", "a")
    assert (await store.take([lease("c")])).ok
    clock.advance(31)  # b and c were never released: an instance died holding them
    assert (await store.take([lease("d")])).ok
    (u,) = await store.peek([lease("x")])
    assert u.used == 1


@deferred_test
async def test_values(env: tuple[StateStore, Clock, str]) -> None:
    store, _, ns = env
    assert await store.get(ns + "v") is None
    await store.set(ns + "v", '{"a": 1}', 60)
    assert await store.get(ns + "v") == '{"a": 1}'
    await store.delete(ns + "v")
    assert await store.get(ns + "v") is None


def test_memory_values_expire_on_the_clock() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    store.set("v", "x", 10)
    clock.advance(9.9)
    assert store.get("v").result == "x"
    clock.advance(0.1)
    assert store.get("v").result is None


@needs_redis
@deferred_test
async def test_two_connections_never_both_take_the_last_unit(
    redis_server: RedisServer,
) -> None:
    clock = Clock()
    clock.advance(1_700_000_000)
    stores = [RedisStore(RedisAddress.parse(redis_server.url), clock, timeout=5) for _ in range(2)]
    for s in stores:
        await _connected(s)
    takes = [stores[i % 2].take([w("race:rpm", 30)]) for i in range(100)]
    results = await defer.gatherResults(takes)
    assert sum(r.ok for r in results) == 30
    for s in stores:
        await s.close()


def test_redis_url_parsing_keeps_the_password_out_of_its_repr() -> None:
    a = RedisAddress.parse("redis://:s3cr%40t@cache.internal:6380/2")
    assert (a.host, a.port, a.db, a.password) == ("cache.internal", 6380, 2, "s3cr@t")
    assert "s3cr" not in repr(a)
    assert RedisAddress.parse("redis://localhost").port == 6379
    for bad in ("http://x", "redis://", "redis://h:port/0", "redis://h/abc"):
        with pytest.raises(ValueError):
            RedisAddress.parse(bad)


@deferred_test
async def test_settle_many_settles_windows_and_releases_leases_at_once(
    env: tuple[StateStore, Clock, str],
) -> None:
    store, _, ns = env
    r = await store.take(
        [w(ns + "a", 100, 10), w(ns + "b", 100, 20), LeaseTake(ns + "p", 1, "x", 30)]
    )
    a, b, _ = r.usage
    await store.settle_many([(ns + "a", a.start, -5), (ns + "b", b.start, 7)], [(ns + "p", "x")])
    ua, ub, up = await store.peek(
        [w(ns + "a", 100), w(ns + "b", 100), LeaseTake(ns + "p", 1, "y", 30)]
    )
    assert (ua.used, ub.used, up.used) == (5, 27, 0)


@needs_redis
@deferred_test
async def test_scripts_reload_after_the_server_forgot_them(redis_server: RedisServer) -> None:
    """EVALSHA falls back to EVAL (a restarted Redis has no scripts cached)."""
    clock = Clock()
    store = RedisStore(RedisAddress.parse(redis_server.url), clock, timeout=5)
    await _connected(store)
    assert (await store.take([w("flush:rpm", 5)])).ok
    assert redis_server.command("SCRIPT", "FLUSH").startswith(b"+OK")
    r = await store.take([w("flush:rpm", 5)])
    assert r.ok and r.usage[0].used == 2
    await store.close()


@needs_redis
@deferred_test
async def test_a_short_lease_does_not_shorten_a_long_one(redis_server: RedisServer) -> None:
    clock = Clock()
    clock.advance(1_700_000_000)
    store = RedisStore(RedisAddress.parse(redis_server.url), clock, timeout=5)
    await _connected(store)
    await store.take([LeaseTake("cool", 1 << 30, "long", 120)])
    await store.take([LeaseTake("cool", 1 << 30, "short", 1)])
    ttl = int(redis_server.command("PTTL", "gatewayd:cool").strip().lstrip(b":"))
    assert ttl > 100_000  # the set outlives the short lease: the long one stays visible
    assert set(await store.members("cool")) == {"long", "short"}
    clock.advance(2)
    assert set(await store.members("cool")) == {"long"}
    await store.close()


@deferred_test
async def test_members_lists_live_leases_with_their_expiry(
    env: tuple[StateStore, Clock, str],
) -> None:
    store, clock, ns = env
    now = clock.seconds()
    await store.take([LeaseTake(ns + "cd", 1 << 30, "dep-a", 30)])
    await store.take([LeaseTake(ns + "cd", 1 << 30, "dep-b", 5)])
    m = await store.members(ns + "cd")
    assert m == {"dep-a": pytest.approx(now + 30), "dep-b": pytest.approx(now + 5)}
    clock.advance(5)
    assert set(await store.members(ns + "cd")) == {"dep-a"}
    assert await store.members(ns + "none") == {}
