"""Coalescing and the shared cache end to end: 50 identical streams in flight make one
upstream call, a slow reader among them slows no one else; a Redis cache is shared by
two gateways, and losing Redis turns hits into misses, never into errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cache_client import post, receive, send
from conftest import GatewayFactory, openai_entry, sdk

from gatewayd.testing import FakeUpstream, Reply, Stream
from gatewayd.testing.redis import RedisServer, redis_available

HI: Any = [{"role": "user", "content": "plan the next tool call"}]
CHAT = "/v1/chat/completions"


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def config(upstream: FakeUpstream, cache: dict[str, object], **general: object) -> object:
    return {
        "model_list": [openai_entry("a", upstream)],
        "general_settings": {"cache": cache, **general},
    }


def test_fifty_identical_streams_make_one_upstream_call_and_a_slow_reader_slows_no_one(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    # About 1 MB, after a pause long enough for every client to arrive while it waits.
    upstream.set_default(Stream(events=100, event_size=10_000, first_byte_delay=1.0))
    gw = gateway(config(upstream, {"type": "memory"}))
    body = {"model": "a", "messages": HI, "stream": True}
    slow = send(gw.port, CHAT, body, rcvbuf=32768)  # it reads nothing until the others are done
    socks = [send(gw.port, CHAT, body) for _ in range(49)]
    with ThreadPoolExecutor(max_workers=49) as pool:
        answers = list(pool.map(receive, socks))
    stats = upstream.wait_for_streams(1)[0]
    wait_for(lambda: stats.finished)
    assert upstream.count() == 1
    assert all(a.status == 200 and a.events()[-1] == b"data: [DONE]" for a in answers)
    assert len({a.body for a in answers}) == 1 and len(answers[0].body) > 1_000_000
    assert sorted(a.cache or "" for a in answers).count("hit") >= 48
    # The slow reader's answer waited for it, whole.
    late = receive(slow)
    assert late.body == answers[0].body
    assert upstream.count() == 1
    # Complete and stored: the next one is a plain hit.
    assert post(gw.port, CHAT, body).cache == "hit" and upstream.count() == 1


def test_coalesce_only_shares_calls_in_flight_and_stores_nothing(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Reply(delay=0.5))
    gw = gateway(config(upstream, {"coalesce_only": True}))
    body = {"model": "a", "messages": HI}
    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(lambda _: post(gw.port, CHAT, body), range(10)))
    assert upstream.count() == 1
    assert len({a.body for a in answers}) == 1 and answers[0].json()["choices"]
    assert post(gw.port, CHAT, body).cache == "bypass" and upstream.count() == 2


def test_json_requests_share_a_stream_in_flight_as_its_assembled_answer(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(events=20, interval=0.02, content="shared words here"))
    gw = gateway(config(upstream, {"type": "memory"}))
    body = {"model": "a", "messages": HI}
    leader = send(gw.port, CHAT, {**body, "stream": True})
    upstream.wait_for_requests(1)
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: post(gw.port, CHAT, body), range(5)))
    streamed = receive(leader)
    assert streamed.events()[-1] == b"data: [DONE]" and upstream.count() == 1
    chunks = [json.loads(e[6:]) for e in streamed.events()[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.startswith("shared")
    for a in answers:
        assert a.status == 200 and a.cache == "hit"
        assert a.json()["choices"][0]["message"]["content"] == text


def test_the_upstream_call_goes_only_when_every_waiter_has(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(events=200, interval=0.05))
    gw = gateway(config(upstream, {"type": "memory"}))
    body = {"model": "a", "messages": HI, "stream": True}
    a = send(gw.port, CHAT, body)
    stats = upstream.wait_for_streams(1)[0]
    b = send(gw.port, CHAT, body)
    b.settimeout(10)
    assert b.recv(4096).startswith(b"HTTP/1.1 200")  # B joined the flight
    a.close()  # the first client goes: B still streams, the upstream goes on
    before = stats.events_written
    wait_for(lambda: stats.events_written > before + 5)
    assert not stats.client_closed
    b.close()  # the last one goes: the upstream call is cancelled
    wait_for(lambda: stats.client_closed)
    assert upstream.count() == 1


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server not installed")
    with RedisServer() as server:
        yield server


def test_a_redis_cache_is_shared_by_two_gateways_and_survives_redis_loss(
    gateway: GatewayFactory, upstream: FakeUpstream, redis: RedisServer
) -> None:
    cfg = config(upstream, {"type": "redis", "ttl": 300}, state_store=redis.url)
    gw1, gw2 = gateway(cfg), gateway(cfg)
    one, two = sdk(gw1.base_url), sdk(gw2.base_url)
    first = one.chat.completions.with_raw_response.create(model="a", messages=HI)
    assert first.headers["x-gatewayd-cache"] == "miss"
    wait_for(lambda: bool(redis.command("KEYS", "gatewayd:cache:*").strip(b"*0\r\n")))
    other = two.chat.completions.with_raw_response.create(model="a", messages=HI)
    assert other.headers["x-gatewayd-cache"] == "hit" and upstream.count() == 1
    assert other.parse().choices[0].message.content == first.parse().choices[0].message.content
    # Streamed from the other gateway, out of Redis.
    chunks = list(two.chat.completions.create(model="a", messages=HI, stream=True))
    assert chunks and upstream.count() == 1
    redis.stop()
    for _ in range(3):  # misses, never errors
        r = one.chat.completions.with_raw_response.create(model="a", messages=HI)
        assert r.headers["x-gatewayd-cache"] == "miss"
    assert upstream.count() == 4
    redis.start()  # back (empty) on the same port: answers are shared again
    other_q: Any = [{"role": "user", "content": "after the outage"}]

    def shared_again() -> bool:
        one.chat.completions.create(model="a", messages=other_q)
        r = two.chat.completions.with_raw_response.create(model="a", messages=other_q)
        return r.headers["x-gatewayd-cache"] == "hit"

    wait_for(shared_again)


def test_a_redis_that_stops_answering_is_a_miss(
    gateway: GatewayFactory, upstream: FakeUpstream, redis: RedisServer
) -> None:
    gw = gateway(config(upstream, {"type": "redis", "url": redis.url}))
    client = sdk(gw.base_url, timeout=10)
    client.chat.completions.create(model="a", messages=HI)
    redis.pause()  # SIGSTOP: connected, silent
    try:
        started = time.monotonic()
        r = client.chat.completions.with_raw_response.create(model="a", messages=HI)
        assert r.headers["x-gatewayd-cache"] == "miss" and time.monotonic() - started < 5
    finally:
        redis.resume()


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_workers_share_answers_only_through_redis(
    gateway: GatewayFactory, upstream: FakeUpstream, redis: RedisServer, kind: str
) -> None:
    cfg = config(upstream, {"type": kind}, state_store=redis.url)
    gw = gateway(cfg, extra_args=["--workers", "2"])
    wait_for(lambda: "2 workers listening" in gw.log())
    body = {"model": "a", "messages": HI}
    seen: dict[str, list[str]] = {}
    deadline = time.monotonic() + 30
    # Fresh connections until both workers answered: bounded by time, not a count (which
    # worker accepts is the kernel's choice; on a busy machine one may take hundreds).
    while time.monotonic() < deadline:
        a = post(gw.port, CHAT, body)
        assert a.status == 200
        seen.setdefault(a.headers["x-gatewayd-worker"], []).append(a.cache or "")
        if len(seen) == 2 and all(len(v) >= 2 for v in seen.values()):
            break
    assert len(seen) == 2
    # memory: each worker missed once; redis: one miss in all.
    assert upstream.count() == (2 if kind == "memory" else 1)
    assert all(v[-1] == "hit" for v in seen.values())
