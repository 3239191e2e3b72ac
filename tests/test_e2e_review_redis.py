"""Review of the merged Redis state store, end to end: regression tests."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import GatewayFactory
from test_e2e_redis import call, chat, pair

from gatewayd.testing import FakeUpstream
from gatewayd.testing.redis import RedisServer, redis_available

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server not installed")


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def test_a_slot_taken_while_redis_hung_is_not_held_for_an_hour(
    gateway: GatewayFactory, redis: RedisServer, upstream: FakeUpstream
) -> None:
    # The take that timed out still runs on Redis once it answers again: its lease
    # must be given back, or max_parallel_requests: 1 refuses the key for an hour.
    a, _b = pair(gateway, redis, [upstream], {"max_parallel_requests": 1})
    assert chat(a.port)[0] == 200
    redis.pause()
    try:
        assert chat(a.port)[0] == 200  # served on local state after the store's timeout
    finally:
        redis.resume()
    deadline = time.monotonic() + 15
    # Bounded: the slot is given back within a few seconds of Redis answering again.
    while redis.command("ZCARD", "gatewayd:key:shared:par") != b":0\r\n":
        assert time.monotonic() < deadline, "the slot taken while Redis hung is still held"
        time.sleep(0.2)
    assert [chat(a.port)[0] for _ in range(3)] == [200, 200, 200]
    assert call(a.port, "GET", "/health", key=None)[2]["state_store"]["status"] == "ok"
