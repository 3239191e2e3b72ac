# mypy: disable-error-code="call-overload,arg-type"
"""Prompt caching's token counts end to end: the real daemon between the official SDKs
and fake upstreams that report cache reads and writes, JSON and streamed, in every
direction; and a key's spend with the deployment's cache prices."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from conftest import MASTER_KEY, GatewayFactory, openai_entry, sdk

from gatewayd.testing import FakeUpstream
from gatewayd.testing.anthropic_upstream import AnthropicReply, AnthropicUpstream
from gatewayd.testing.replies import chat_reply, chat_stream

ANT_KEY = "sk-ant-SECRET-cache-1"
CLIENT_KEY = "sk-team-cache-SECRET-1"
HI = [{"role": "user", "content": "Hi"}]
#: The issue's numbers: 13 fresh input tokens, 20 written to the cache, 100 read from it.
CACHED = AnthropicReply(
    input_tokens=13, cache_creation_input_tokens=20, cache_read_input_tokens=100, output_tokens=6
)
PRICES = {
    "input_cost_per_token": 0.001,
    "output_cost_per_token": 0.002,
    "cache_read_input_token_cost": 0.0001,
    "cache_creation_input_token_cost": 0.00125,
}


@pytest.fixture
def claude() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream(api_key=ANT_KEY) as server:
        yield server


def claude_entry(alias: str, server: AnthropicUpstream) -> dict[str, Any]:
    params = {"model": "anthropic/claude-x", "api_base": server.url, "api_key": ANT_KEY}
    return {"model_name": alias, "params": {**params, **PRICES}}


def key_spend(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/key/info", headers={"Authorization": f"Bearer {CLIENT_KEY}"})
    info = json.loads(conn.getresponse().read())
    conn.close()
    return float(info["info"]["spend"]["usd"])


def test_anthropic_cache_counts_reach_openai_clients_and_spend(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [claude_entry("c", claude)],
            "general_settings": {"master_key": MASTER_KEY},
            "keys": [{"key": CLIENT_KEY, "name": "team-cache"}],
        }
    )
    c = sdk(gw.base_url, CLIENT_KEY)
    claude.enqueue(CACHED)
    reply = c.chat.completions.create(model="c", messages=HI)
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens == 133 and usage.total_tokens == 139
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 100
    # 13 at the input price, 100 at the cache read price, 20 at the cache write price.
    one = 13 * 0.001 + 100 * 0.0001 + 20 * 0.00125 + 6 * 0.002
    assert key_spend(gw.port) == pytest.approx(one)

    claude.enqueue(CACHED)
    chunks = list(
        c.chat.completions.create(
            model="c",
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1].usage
    assert last is not None and last.prompt_tokens == 133
    assert last.prompt_tokens_details is not None
    assert last.prompt_tokens_details.cached_tokens == 100
    assert key_spend(gw.port) == pytest.approx(2 * one)

    claude.enqueue(CACHED)
    r = c.responses.create(model="c", input="Hi")
    assert r.usage is not None and r.usage.input_tokens == 133
    assert r.usage.input_tokens_details.cached_tokens == 100
    claude.enqueue(CACHED)
    with c.responses.stream(model="c", input="Hi") as stream:
        final = stream.get_final_response()
    assert final.usage is not None and final.usage.input_tokens == 133
    assert final.usage.input_tokens_details.cached_tokens == 100
    assert key_spend(gw.port) == pytest.approx(4 * one)


def test_anthropic_cache_counts_native_messages_stream_spend(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    # Passed through: message_start carries the input and cache counts, message_delta
    # only the output; the spend must count both.
    gw = gateway(
        {
            "model_list": [claude_entry("c", claude)],
            "general_settings": {"master_key": MASTER_KEY},
            "keys": [{"key": CLIENT_KEY, "name": "team-cache"}],
        }
    )
    c = anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0)
    claude.enqueue(CACHED)
    with c.messages.stream(model="c", max_tokens=10, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.usage.input_tokens == 13 and final.usage.cache_read_input_tokens == 100
    one = 13 * 0.001 + 100 * 0.0001 + 20 * 0.00125 + 6 * 0.002
    assert key_spend(gw.port) == pytest.approx(one)


def test_openai_cached_tokens_reach_messages_clients(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("m", upstream)]})
    c = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)
    upstream.enqueue(chat_reply(content="Hi", prompt_tokens=111, cached_tokens=100))
    reply = c.messages.create(model="m", max_tokens=10, messages=HI)
    # Anthropic clients add input_tokens and the cache reads: 11 + 100, not 111 + 100.
    assert reply.usage.input_tokens == 11 and reply.usage.cache_read_input_tokens == 100
    upstream.enqueue(chat_stream(content="Hi", prompt_tokens=111, cached_tokens=100))
    with c.messages.stream(model="m", max_tokens=10, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.usage.input_tokens == 11 and final.usage.cache_read_input_tokens == 100


def test_a_translated_stream_without_include_usage_still_spends_what_was_used(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    # The client did not ask for usage: its events carry none, yet Anthropic reported it
    # and the spend counts it (not the reservation's estimate).
    gw = gateway(
        {
            "model_list": [claude_entry("c", claude)],
            "general_settings": {"master_key": MASTER_KEY},
            "keys": [{"key": CLIENT_KEY, "name": "team-cache"}],
        }
    )
    claude.enqueue(CACHED)
    chunks = list(
        sdk(gw.base_url, CLIENT_KEY).chat.completions.create(model="c", messages=HI, stream=True)
    )
    assert all(getattr(c, "usage", None) is None for c in chunks)
    one = 13 * 0.001 + 100 * 0.0001 + 20 * 0.00125 + 6 * 0.002
    assert key_spend(gw.port) == pytest.approx(one)
