"""Two real gateway processes sharing one real redis-server: limits, budgets and
cooldowns hold across instances; losing Redis costs no request (``open``) or answers
503 (``closed``); sharing resumes when Redis is back."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import GatewayFactory, openai_entry

from gatewayd.testing import Error, FakeUpstream, GatewayProcess
from gatewayd.testing.redis import RedisServer, redis_available

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server not installed")

KEY = "sk-shared-SECRET-4242"
CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 50}


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def call(
    port: int, method: str, path: str, body: Any = None, key: str | None = KEY
) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(data or b"null")


def chat(port: int, key: str | None = KEY) -> tuple[int, dict[str, str], Any]:
    return call(port, "POST", "/v1/chat/completions", CHAT, key)


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def pair(
    gateway: GatewayFactory,
    redis: RedisServer,
    upstreams: list[FakeUpstream],
    key: dict[str, Any],
    **general: Any,
) -> tuple[GatewayProcess, GatewayProcess]:
    config = {
        "model_list": [openai_entry("fast", u) for u in upstreams],
        "general_settings": {"state_store": redis.url, **general},
        "keys": [{"key": KEY, "name": "shared", **key}],
    }
    return gateway(config), gateway(config)


def test_rpm_30_gets_exactly_30_successes_across_two_instances(
    gateway: GatewayFactory, redis: RedisServer, upstream: FakeUpstream
) -> None:
    a, b = pair(gateway, redis, [upstream], {"rpm": 30})
    ports = [a.port, b.port] * 40
    with ThreadPoolExecutor(16) as pool:
        statuses = [s for s, _, _ in pool.map(chat, ports)]
    assert statuses.count(200) == 30
    assert statuses.count(429) == 50
    assert upstream.count() == 30
    # Either instance reports the shared window.
    for gw in (a, b):
        info = call(gw.port, "GET", "/key/info")[2]["info"]
        assert info["rpm"]["remaining"] == 0
    assert "SECRET" not in a.log() + b.log()


def test_budget_is_not_overshot_by_more_than_one_reservation(
    gateway: GatewayFactory, redis: RedisServer, upstream: FakeUpstream
) -> None:
    limit = 300
    a, b = pair(gateway, redis, [upstream], {"budget": {"tokens": limit, "period": "1d"}})
    reservation = 4 + 50  # ceil(len("user" + "hello there") / 4) + max_tokens

    def used(result: tuple[int, dict[str, str], Any]) -> int:
        status, _, body = result
        if status == 200:
            return int(body["usage"]["total_tokens"])
        assert status == 429 and body["error"]["code"] == "budget_exceeded"
        return 0

    with ThreadPoolExecutor(16) as pool:
        spent = sum(used(r) for r in pool.map(chat, [a.port, b.port] * 60))
    for i in range(200):  # top off sequentially: refused only once the budget is used
        result = chat((a.port, b.port)[i % 2])
        if result[0] == 429:
            break
        spent += used(result)
    else:
        pytest.fail("the budget was never enforced")
    assert limit <= spent <= limit + reservation
    for gw in (a, b):
        assert call(gw.port, "GET", "/key/info")[2]["info"]["spend"]["tokens"] == spent


def test_a_deployment_failing_on_one_instance_is_skipped_by_the_other(
    gateway: GatewayFactory, redis: RedisServer, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    upstream2.set_default(Error(503, "down"))
    a, b = pair(
        gateway,
        redis,
        [upstream, upstream2],
        {},
        allowed_fails=0,
        cooldown_time=120,
        num_retries=1,
    )
    for _ in range(30):  # until a's balancer has tried the broken deployment once
        assert chat(a.port)[0] == 200
        if upstream2.count():
            break
    assert upstream2.count() == 1

    def b_sees_cooldown() -> bool:
        models = call(b.port, "GET", "/health", key=None)[2]["models"]["fast"]["deployments"]
        return any(d["state"] == "cooldown" for d in models)

    wait_until(b_sees_cooldown)
    for _ in range(20):
        assert chat(b.port)[0] == 200
    assert upstream2.count() == 1  # b never tried it


def test_redis_killed_mid_load_open_serves_every_request_and_resumes(
    gateway: GatewayFactory, redis: RedisServer, upstream: FakeUpstream
) -> None:
    a, b = pair(gateway, redis, [upstream], {"rpm": 100000})
    ports = [a.port, b.port]
    with ThreadPoolExecutor(8) as pool:
        first = pool.map(chat, ports * 20)
        assert all(s == 200 for s, _, _ in first)
        redis.stop()
        during = list(pool.map(chat, ports * 40))
    assert [s for s, _, _ in during].count(200) == len(during)
    for gw in (a, b):
        health = call(gw.port, "GET", "/health", key=None)[2]
        assert health["state_store"]["status"] == "unavailable"
        assert health["state_store"]["failure_mode"] == "open"
        metrics = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        metrics.request("GET", "/metrics")
        text = metrics.getresponse().read().decode()
        assert "gatewayd_state_store_outages_total 1" in text
        assert "gatewayd_state_store_up 0" in text
        assert gw.log().count("state store redis://127.0.0.1") >= 1
        assert gw.log().count("unavailable (") == 1  # logged once per outage
    redis.start()

    def healthy(gw: GatewayProcess) -> bool:
        return bool(call(gw.port, "GET", "/health", key=None)[2]["state_store"]["status"] == "ok")

    for gw in (a, b):
        chat(gw.port)  # a call notices the store is back
        wait_until(lambda gw=gw: chat(gw.port)[0] == 200 and healthy(gw))  # type: ignore[misc]
    # Sharing resumed: requests through a count in b's view of the key.
    before = call(b.port, "GET", "/key/info")[2]["info"]["rpm"]["remaining"]
    for _ in range(3):
        assert chat(a.port)[0] == 200
    after = call(b.port, "GET", "/key/info")[2]["info"]["rpm"]["remaining"]
    assert before - after == 3
    assert "sharing resumed" in a.log()


def test_redis_down_closed_answers_503_until_it_is_back(
    gateway: GatewayFactory, redis: RedisServer, upstream: FakeUpstream
) -> None:
    a, _b = pair(gateway, redis, [upstream], {"rpm": 1000}, state_store_failure="closed")
    assert chat(a.port)[0] == 200
    redis.stop()
    status, headers, body = chat(a.port)
    assert status == 503
    assert body["error"]["code"] == "state_store_unavailable"
    assert headers["retry-after"] == "1"
    served = upstream.count()
    statuses = [chat(a.port)[0] for _ in range(5)]
    assert statuses == [503] * 5 and upstream.count() == served
    redis.start()
    wait_until(lambda: chat(a.port)[0] == 200)


def test_redis_with_a_password_never_shows_it(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    with RedisServer(password="pw-SECRET-77") as redis:
        gw = gateway(
            {
                "model_list": [openai_entry("fast", upstream)],
                "router_settings": {
                    "redis_host": "127.0.0.1",
                    "redis_port": redis.port,
                    "redis_password": "pw-SECRET-77",
                },
                "keys": [{"key": KEY, "name": "shared", "rpm": 2}],
            }
        )
        assert [chat(gw.port)[0] for _ in range(3)] == [200, 200, 429]
        assert b"shared:rpm" in redis.command("KEYS", "*")  # the counter lives in Redis
        health = call(gw.port, "GET", "/health", key=None)[2]["state_store"]
        assert health["status"] == "ok"
        assert "SECRET" not in json.dumps(health) + gw.log()


def test_a_hung_redis_costs_a_short_timeout_not_a_hang(
    gateway: GatewayFactory, redis: RedisServer, upstream: FakeUpstream
) -> None:
    a, _b = pair(gateway, redis, [upstream], {"rpm": 1000})
    assert chat(a.port)[0] == 200
    redis.pause()
    try:
        # Each request waits at most the store's timeout, then is served on local state
        # (the client's own timeout of 30 s would fail the test on a hang).
        assert [chat(a.port)[0] for _ in range(3)] == [200, 200, 200]
        health = call(a.port, "GET", "/health", key=None)[2]["state_store"]
        assert (
            health["status"] == "unavailable"
            and "did not answer" in (health["last_error"] or "") + a.log()
        )
    finally:
        redis.resume()

    def back() -> bool:
        chat(a.port)  # a call through the store notices it answers again
        return bool(call(a.port, "GET", "/health", key=None)[2]["state_store"]["status"] == "ok")

    wait_until(back)


def test_a_previous_response_id_from_one_instance_works_on_the_other(
    gateway: GatewayFactory, redis: RedisServer, upstream: FakeUpstream
) -> None:
    # vllm/ speaks Chat Completions only: the gateway translates and keeps the history.
    entry = {"model_name": "fast", "params": {"model": "vllm/up", "api_base": upstream.url}}
    config = {"model_list": [entry], "general_settings": {"state_store": redis.url}}
    a, b = gateway(config), gateway(config)
    status, _, first = call(a.port, "POST", "/v1/responses", {"model": "fast", "input": "one"})
    assert status == 200 and first["id"].startswith("resp_")
    follow = {"model": "fast", "input": "two", "previous_response_id": first["id"]}
    status, _, second = call(b.port, "POST", "/v1/responses", follow)
    assert status == 200, second
    sent = upstream.requests[-1].json()["messages"]
    texts = [m.get("content") for m in sent]
    assert texts[0] == "one" and texts[-1] == "two" and len(sent) == 3  # one, answer, two
    assert call(b.port, "GET", f"/v1/responses/{first['id']}")[0] == 200
    # Deleted through b, gone for a too.
    assert call(b.port, "DELETE", f"/v1/responses/{first['id']}")[0] == 200
    assert call(a.port, "GET", f"/v1/responses/{first['id']}")[0] == 404
