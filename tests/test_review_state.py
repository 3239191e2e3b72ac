"""Review of the merged Redis store: a slot whose take or release lost its answer is
given back (a hung Redis, then a slow one), on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_state_store import deferred_test
from twisted.internet import reactor
from twisted.internet.task import deferLater

from gatewayd.config.redis_address import RedisAddress
from gatewayd.state import LeaseTake, StoreUnavailable, WindowTake
from gatewayd.state.redis import RedisStore
from gatewayd.testing.redis import RedisServer, redis_available

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server not installed")


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


async def _store(server: RedisServer) -> RedisStore:
    store = RedisStore(RedisAddress.parse(server.url), reactor, timeout=0.3)
    for _ in range(100):  # bounded: 5 s
        if store.connected:
            # The scripts loaded (EVALSHA works): a lost answer then means a done take.
            assert (await store.take([LeaseTake("warm", 1, "w", 1)])).ok
            return store
        await deferLater(reactor, 0.05)
    raise AssertionError("no connection")


async def _held(server: RedisServer, key: str, want: bytes) -> bool:
    for _ in range(50):  # bounded: 10 s
        if server.command("ZCARD", "gatewayd:" + key) == want:
            return True
        await deferLater(reactor, 0.2)
    return False


@deferred_test
async def test_a_release_that_timed_out_is_retried(server: RedisServer) -> None:
    store = await _store(server)
    try:
        assert (await store.take([LeaseTake("k:par", 1, "L1", 3600)])).ok
        server.pause()
        try:
            with pytest.raises(StoreUnavailable):
                await store.settle_many([], [("k:par", "L1")])
        finally:
            server.resume()
        assert await _held(server, "k:par", b":0\r\n")
    finally:
        await store.close()


@deferred_test
async def test_a_take_that_timed_out_does_not_keep_its_slot(server: RedisServer) -> None:
    store = await _store(server)
    try:
        server.pause()
        try:
            with pytest.raises(StoreUnavailable):
                await store.take([LeaseTake("k:par", 1, "L2", 3600)])
        finally:
            server.resume()  # the queued take now runs on the server
        await deferLater(reactor, 0.5)
        assert await _held(server, "k:par", b":0\r\n")
        assert (await store.take([LeaseTake("k:par", 1, "L3", 3600)])).ok
    finally:
        await store.close()


@deferred_test
async def test_a_shared_cooldown_lease_is_not_given_back(server: RedisServer) -> None:
    # Cooldown leases are named by deployment, not by request: never abandoned.
    store = await _store(server)
    try:
        server.pause()
        try:
            with pytest.raises(StoreUnavailable):
                await store.take([LeaseTake("cooldowns", 1 << 30, "dep", 30, abandon=False)])
        finally:
            server.resume()
        assert await _held(server, "cooldowns", b":1\r\n")
    finally:
        await store.close()


@deferred_test
async def test_a_budget_take_that_timed_out_is_undone_not_spent(server: RedisServer) -> None:
    # A reservation whose answer was lost would count against the key's budget for the
    # whole period (and its rpm for the minute): undone once Redis answers.
    store = await _store(server)
    try:
        budget = WindowTake("k:spend", 10_000, 1025, 86400)
        assert (await store.take([budget])).ok  # the window opens: 1025 used
        server.pause()
        try:
            with pytest.raises(StoreUnavailable):
                await store.take([budget])
        finally:
            server.resume()
        for _ in range(50):  # bounded: 10 s
            await deferLater(reactor, 0.2)
            (u,) = await store.peek([budget])
            if u.used == 1025:
                break
        assert u.used == 1025
    finally:
        await store.close()


@deferred_test
async def test_a_take_given_up_before_it_ran_does_nothing(server: RedisServer) -> None:
    store = await _store(server)
    try:
        store._undo_take("t1")  # the undo reaches Redis first (another connection)
        await deferLater(reactor, 0.3)
        from gatewayd.state import scripts

        args = ["0", "take:t1", "w", "5", "1.0", "60.0"]
        assert await store._script(scripts.TAKE, ["gatewayd:k:late"], args) == [0, 0]
        (u,) = await store.peek([WindowTake("k:late", 5, 1, 60)])
        assert u.used == 0
    finally:
        await store.close()
