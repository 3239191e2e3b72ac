"""The response cache end to end: the real daemon, the official SDKs, fake upstreams
that count what they were asked. Hits and misses per dialect, streamed hits replayed
chunk by chunk, JSON hits of streams, tenant scope, controls, reload, accounting."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from cache_client import post
from conftest import MASTER_KEY, GatewayFactory, openai_entry, sdk

from gatewayd.testing import FakeUpstream, SSEFramingStream
from gatewayd.testing.replies import chat_reply, chat_stream, responses_reply

HI: Any = [{"role": "user", "content": "what is the weather in Rome?"}]
KEY_A = "sk-team-a-SECRET-1111"
KEY_B = "sk-team-b-SECRET-2222"
CHAT = "/v1/chat/completions"


def config(upstream: FakeUpstream, cache: dict[str, Any] | None = None, **general: Any) -> Any:
    return {
        "model_list": [
            openai_entry("a", upstream, input_cost_per_token=0.001, output_cost_per_token=0.002),
            openai_entry("nocache", upstream),
        ],
        "general_settings": {
            "cache": {"type": "memory"} if cache is None else cache,
            "alias_settings": {"nocache": {"cache": False}},
            **general,
        },
    }


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@pytest.fixture
def reasoning_stream() -> Iterator[SSEFramingStream]:
    # Reasoning and tool-call deltas, each event its own read (interval): boundaries to keep.
    s = chat_stream(
        content="It is sunny",
        reasoning="Rome is in Italy",
        calls=[("call_1", "get_weather", {"city": "Rome"})],
    )
    yield SSEFramingStream(s.pieces, interval=0.005)


def test_chat_hits_and_misses_with_the_sdk(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream))
    client = sdk(gw.base_url)
    first = client.chat.completions.with_raw_response.create(model="a", messages=HI)
    second = client.chat.completions.with_raw_response.create(model="a", messages=HI, user="u2")
    assert first.headers["x-gatewayd-cache"] == "miss" and "age" not in first.headers
    assert second.headers["x-gatewayd-cache"] == "hit" and int(second.headers["age"]) >= 0
    assert second.parse().model_dump() == first.parse().model_dump()
    usage = second.parse().usage
    assert usage is not None and usage.total_tokens > 0
    assert upstream.count() == 1
    # A different body is another answer; temperature 1.0 and 1 are the same.
    client.chat.completions.create(model="a", messages=HI, temperature=1)
    assert upstream.count() == 2
    got = client.chat.completions.with_raw_response.create(model="a", messages=HI, temperature=1.0)
    assert got.headers["x-gatewayd-cache"] == "hit" and upstream.count() == 2
    # An alias with cache: false is never cached.
    for _ in range(2):
        r = client.chat.completions.with_raw_response.create(model="nocache", messages=HI)
        assert r.headers["x-gatewayd-cache"] == "bypass"
    assert upstream.count() == 4


def test_completions_and_embeddings_hit(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream))
    client = sdk(gw.base_url)
    e1 = client.embeddings.with_raw_response.create(model="a", input=["chunk one", "two"])
    e2 = client.embeddings.with_raw_response.create(model="a", input=["chunk one", "two"])
    assert (e1.headers["x-gatewayd-cache"], e2.headers["x-gatewayd-cache"]) == ("miss", "hit")
    assert e2.parse().data[1].embedding == e1.parse().data[1].embedding
    c1 = client.completions.with_raw_response.create(model="a", prompt="Say hi")
    c2 = client.completions.with_raw_response.create(model="a", prompt="Say hi")
    assert c2.headers["x-gatewayd-cache"] == "hit"
    assert c2.parse().choices[0].text == c1.parse().choices[0].text
    assert upstream.count("/embeddings") == 1 and upstream.count("/completions") == 1


def test_streamed_hit_replays_every_chunk_and_json_hit_assembles_it(
    gateway: GatewayFactory, upstream: FakeUpstream, reasoning_stream: SSEFramingStream
) -> None:
    upstream.set_default(reasoning_stream)
    gw = gateway(config(upstream))
    body = {"model": "a", "messages": HI, "stream": True}
    first = post(gw.port, CHAT, body)
    hit = post(gw.port, CHAT, body)
    assert (first.cache, hit.cache) == ("miss", "hit")
    assert len(first.chunks) > 5, "the fake's reads should arrive apart"
    assert hit.chunks == first.chunks  # the same events, the same chunk boundaries
    assert b"reasoning_content" in hit.body and b"tool_calls" in hit.body
    assert hit.events()[-1] == b"data: [DONE]"
    # The SDK reads the replay like the original stream.
    client = sdk(gw.base_url)
    deltas = list(client.chat.completions.create(model="a", messages=HI, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in deltas if c.choices)
    assert text == "It is sunny"
    # Asked for JSON: the stream's events added up, reasoning and tool call included.
    whole = client.chat.completions.with_raw_response.create(model="a", messages=HI)
    assert whole.headers["x-gatewayd-cache"] == "hit"
    msg: Any = whole.parse().choices[0].message
    assert msg.content == "It is sunny"
    assert msg.tool_calls is not None and msg.tool_calls[0].function.name == "get_weather"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Rome"}
    assert (msg.model_extra or {}).get("reasoning_content", "").strip() == "Rome is in Italy"
    usage = whole.parse().usage
    assert usage is not None and usage.total_tokens == 14
    assert upstream.count() == 1


def test_a_json_answer_is_replayed_as_a_stream(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(chat_reply(content="Cached words", reasoning="think"))
    gw = gateway(config(upstream))
    client = sdk(gw.base_url)
    client.chat.completions.create(model="a", messages=HI)
    chunks = list(client.chat.completions.create(model="a", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Cached words"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 14
    assert upstream.count() == 1


def test_a_broken_stream_is_not_stored(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    cut = chat_stream(content="half an answer", done=False)
    upstream.enqueue(SSEFramingStream(cut.pieces[:3]))
    gw = gateway(config(upstream))
    body = {"model": "a", "messages": HI, "stream": True}
    post(gw.port, CHAT, body)
    again = post(gw.port, CHAT, body)
    assert again.cache == "miss" and upstream.count() == 2


def test_messages_and_responses_have_their_own_key_space(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(config(upstream))
    ant = anthropic.Anthropic(base_url=gw.base_url.removesuffix("/v1"), api_key="x", max_retries=0)
    m1 = ant.messages.with_raw_response.create(model="a", max_tokens=50, messages=HI)
    m2 = ant.messages.with_raw_response.create(model="a", max_tokens=50, messages=HI)
    assert (m1.headers["x-gatewayd-cache"], m2.headers["x-gatewayd-cache"]) == ("miss", "hit")
    assert m2.parse().content[0].text == m1.parse().content[0].text  # type: ignore[union-attr]
    # Streamed: the Messages events, built from the cached chat answer.
    with ant.messages.stream(model="a", max_tokens=50, messages=HI) as s:
        assert s.get_final_text() == m1.parse().content[0].text  # type: ignore[union-attr]
    client = sdk(gw.base_url)
    upstream.enqueue(responses_reply("Native hello"))  # an OpenAI upstream speaks Responses
    r1 = client.responses.with_raw_response.create(model="a", input="what is the weather?")
    r2 = client.responses.with_raw_response.create(model="a", input="what is the weather?")
    assert (r1.headers["x-gatewayd-cache"], r2.headers["x-gatewayd-cache"]) == ("miss", "hit")
    assert r2.parse().output_text == r1.parse().output_text == "Native hello"
    assert upstream.count("/responses") == 1
    # The chat request with the same messages is not the Messages one.
    chat = client.chat.completions.with_raw_response.create(model="a", messages=HI, max_tokens=50)
    assert chat.headers["x-gatewayd-cache"] == "miss"
    assert upstream.count() == 3


def test_a_key_never_gets_another_keys_answer(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    keys = [{"key": KEY_A, "name": "team-a"}, {"key": KEY_B, "name": "team-b"}]
    gw = gateway({**config(upstream, master_key=MASTER_KEY), "keys": keys})
    upstream.enqueue(chat_reply(content="for A"), chat_reply(content="for B"))
    a = sdk(gw.base_url, KEY_A).chat.completions.with_raw_response.create(model="a", messages=HI)
    b = sdk(gw.base_url, KEY_B).chat.completions.with_raw_response.create(model="a", messages=HI)
    assert a.parse().choices[0].message.content == "for A"
    assert b.headers["x-gatewayd-cache"] == "miss"
    assert b.parse().choices[0].message.content == "for B"
    again = sdk(gw.base_url, KEY_A).chat.completions.create(model="a", messages=HI)
    assert again.choices[0].message.content == "for A" and upstream.count() == 2


def test_scope_shared_serves_every_key(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    keys = [{"key": KEY_A, "name": "team-a"}, {"key": KEY_B, "name": "team-b"}]
    cfg = config(upstream, {"type": "memory", "scope": "shared"}, master_key=MASTER_KEY)
    gw = gateway({**cfg, "keys": keys})
    sdk(gw.base_url, KEY_A).chat.completions.create(model="a", messages=HI)
    b = sdk(gw.base_url, KEY_B).chat.completions.with_raw_response.create(model="a", messages=HI)
    assert b.headers["x-gatewayd-cache"] == "hit" and upstream.count() == 1


def test_cache_control_and_litellm_body_controls(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(config(upstream))
    body = {"model": "a", "messages": HI}
    assert post(gw.port, CHAT, body, {"Cache-Control": "no-store"}).cache == "miss"
    assert post(gw.port, CHAT, body).cache == "miss"  # no-store kept it out
    assert post(gw.port, CHAT, body).cache == "hit"
    fresh = post(gw.port, CHAT, body, {"Cache-Control": "no-cache"})
    assert fresh.cache == "bypass" and upstream.count() == 3
    old = post(gw.port, CHAT, body, {"Cache-Control": "max-age=0"})
    assert old.cache == "miss" and upstream.count() == 4
    young = post(gw.port, CHAT, body, {"Cache-Control": "max-age=600"})
    assert young.cache == "hit" and int(young.headers["age"]) < 600
    # LiteLLM's body field: honoured, and never sent upstream.
    lite = post(gw.port, CHAT, {**body, "cache": {"no-cache": True}})
    assert lite.cache == "bypass" and upstream.count() == 5
    assert "cache" not in upstream.last_request.json()
    spaced = {**body, "cache": {"namespace": "eval-7"}}
    assert post(gw.port, CHAT, spaced).cache == "miss"
    assert post(gw.port, CHAT, spaced).cache == "hit"
    bad = post(gw.port, CHAT, {**body, "cache": {"ttl": "soon"}})
    assert bad.status == 400 and "cache.ttl" in bad.json()["error"]["message"]


def test_hits_cost_nothing_and_are_logged_as_cached(
    gateway: GatewayFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    usage_log = tmp_path / "usage.jsonl"
    keys = [{"key": KEY_A, "name": "team-a", "tpm": 100000}]
    cfg = config(upstream, master_key=MASTER_KEY, usage_log=str(usage_log))
    gw = gateway({**cfg, "keys": keys})
    client = sdk(gw.base_url, KEY_A)
    for _ in range(3):
        client.chat.completions.create(model="a", messages=HI)
    wait_for(lambda: usage_log.exists() and len(usage_log.read_text().splitlines()) == 3)
    lines = [json.loads(x) for x in usage_log.read_text().splitlines()]
    assert [x["cached"] for x in lines] == [False, True, True]
    assert lines[0]["cost_usd"] > 0 and lines[1]["cost_usd"] == 0
    assert lines[1]["total_tokens"] == 0  # no tpm or budget consumed by a hit
    wait_for(lambda: gw.log().count("cached=true") == 2)
    metrics = post_metrics(gw.port)
    assert (
        'gatewayd_cache_requests_total{alias="a",endpoint="chat/completions",result="hit"} 2.0'
        in metrics
    )
    assert 'result="miss"} 1.0' in metrics
    assert "gatewayd_cache_bytes " in metrics
    spend = [x for x in metrics.splitlines() if x.startswith("gatewayd_spend_usd_total{")]
    assert len(spend) == 1 and float(spend[0].split()[-1]) == pytest.approx(lines[0]["cost_usd"])
    tokens = [x for x in metrics.splitlines() if x.startswith("gatewayd_tokens_total{")]
    counted = sum(float(x.split()[-1]) for x in tokens)
    assert counted == lines[0]["total_tokens"]  # the hits' tokens are not counted again


def post_metrics(port: int) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def test_reload_keeps_the_cache(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream))
    client = sdk(gw.base_url)
    client.chat.completions.create(model="a", messages=HI)
    gw.write_config(config(upstream, {"type": "memory", "ttl": 600}))
    gw.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.log().count("config reloaded") == 1)
    r = client.chat.completions.with_raw_response.create(model="a", messages=HI)
    assert r.headers["x-gatewayd-cache"] == "hit" and upstream.count() == 1
    # Turned off by a reload: no cache stage at all; turned on again: the answers are there.
    off = config(upstream)
    del off["general_settings"]["cache"]
    gw.write_config(off)
    gw.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.log().count("config reloaded") == 2)
    r = client.chat.completions.with_raw_response.create(model="a", messages=HI)
    assert "x-gatewayd-cache" not in r.headers and upstream.count() == 2
    gw.write_config(config(upstream))
    gw.send_signal(signal.SIGHUP)
    wait_for(lambda: gw.log().count("config reloaded") == 3)
    r = client.chat.completions.with_raw_response.create(model="a", messages=HI)
    assert r.headers["x-gatewayd-cache"] == "hit" and upstream.count() == 2


def test_memory_bound_evicts_and_endpoints_limit_what_is_cached(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    cache = {"type": "memory", "max_bytes": 3000, "endpoints": ["chat/completions"]}
    gw = gateway(config(upstream, cache))
    client = sdk(gw.base_url)
    for i in range(8):  # each answer is some 700 bytes: the bound holds about four
        q: Any = [{"role": "user", "content": f"question {i}"}]
        client.chat.completions.create(model="a", messages=q)
    metrics = post_metrics(gw.port)
    evicted = [x for x in metrics.splitlines() if x.startswith("gatewayd_cache_evictions_total ")]
    assert evicted and float(evicted[0].split()[-1]) >= 3
    held = [x for x in metrics.splitlines() if x.startswith("gatewayd_cache_bytes ")]
    assert held and 0 < float(held[0].split()[-1]) <= 3000
    last: Any = [{"role": "user", "content": "question 7"}]
    first: Any = [{"role": "user", "content": "question 0"}]
    assert post(gw.port, CHAT, {"model": "a", "messages": last}).cache == "hit"
    assert post(gw.port, CHAT, {"model": "a", "messages": first}).cache == "miss"
    e = client.embeddings.with_raw_response.create(model="a", input="x")
    assert e.headers["x-gatewayd-cache"] == "bypass"


def test_a_key_out_of_tokens_and_budget_still_gets_its_hits(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    keys = [{"key": KEY_A, "name": "team-a", "tpm": 20, "budget": {"usd": 0.01}}]
    gw = gateway({**config(upstream, master_key=MASTER_KEY), "keys": keys})
    upstream.set_default(chat_reply(content="spent", prompt_tokens=15, completion_tokens=10))
    client = sdk(gw.base_url, KEY_A)
    client.chat.completions.create(model="a", messages=HI)  # 25 tokens: tpm and budget gone
    hit = client.chat.completions.with_raw_response.create(model="a", messages=HI)
    assert hit.headers["x-gatewayd-cache"] == "hit"
    assert hit.parse().choices[0].message.content == "spent"
    other: Any = [{"role": "user", "content": "something new"}]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="a", messages=other)
    assert upstream.count() == 1
