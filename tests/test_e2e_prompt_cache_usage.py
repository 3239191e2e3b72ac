# mypy: disable-error-code="union-attr,index,arg-type,call-overload"
"""Usage with prompt caching, across dialects, end to end (issue 17): the official SDKs
against the real daemon.

OpenAI's ``prompt_tokens`` (and Responses' ``input_tokens``) count every input token,
cached ones with them; Anthropic's ``input_tokens`` leaves out the cache reads and writes.
Each translation keeps the count its client expects, JSON and streamed, and spend prices
cache reads and writes at the deployment's own prices."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from conftest import MASTER_KEY, GatewayFactory, openai_entry, sdk

from gatewayd.testing import FakeUpstream
from gatewayd.testing.anthropic_upstream import AnthropicReply, AnthropicUpstream
from gatewayd.testing.replies import chat_reply, chat_stream

ANT_KEY = "sk-ant-SECRET-987654"
KEY = "sk-team-cache-SECRET-4444"
HI = [{"role": "user", "content": "Hi"}]
#: The issue's Anthropic usage: 13 plain input tokens, 20 written to the cache, 100 read.
CACHED = AnthropicReply(
    input_tokens=13, output_tokens=6, cache_creation_input_tokens=20, cache_read_input_tokens=100
)


@pytest.fixture
def claude() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream(api_key=ANT_KEY) as server:
        yield server


def claude_entry(alias: str, server: AnthropicUpstream, **params: Any) -> dict[str, Any]:
    p = {"model": "anthropic/claude-x", "api_base": server.url, "api_key": ANT_KEY, **params}
    return {"model_name": alias, "params": p}


def anthropic_client(base_url: str, key: str = "none") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key=key, max_retries=0)


def test_anthropic_cache_counts_reach_chat_clients(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    gw = gateway({"model_list": [claude_entry("c", claude)]})
    c = sdk(gw.base_url)
    claude.enqueue(CACHED, CACHED)
    r = c.chat.completions.create(model="c", messages=HI)
    assert r.usage.prompt_tokens == 133 and r.usage.completion_tokens == 6
    assert r.usage.total_tokens == 139
    assert r.usage.prompt_tokens_details.cached_tokens == 100
    chunks = list(
        c.chat.completions.create(
            model="c", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = [k.usage for k in chunks if k.usage is not None]
    assert len(usage) == 1
    assert usage[0].prompt_tokens == 133 and usage[0].completion_tokens == 6
    assert usage[0].prompt_tokens_details.cached_tokens == 100


def test_anthropic_cache_counts_reach_responses_clients(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    gw = gateway({"model_list": [claude_entry("c", claude)]})
    c = sdk(gw.base_url)
    claude.enqueue(CACHED, CACHED)
    r = c.responses.create(model="c", input="Hi", store=False)
    assert r.usage.input_tokens == 133 and r.usage.output_tokens == 6
    assert r.usage.input_tokens_details.cached_tokens == 100
    events = list(c.responses.create(model="c", input="Hi", store=False, stream=True))
    done = [e for e in events if e.type == "response.completed"]
    assert len(done) == 1
    u = done[0].response.usage
    assert u.input_tokens == 133 and u.input_tokens_details.cached_tokens == 100


def test_openai_cached_tokens_reach_messages_clients_without_double_counting(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("m", upstream)]})
    c = anthropic_client(gw.base_url)
    upstream.enqueue(
        chat_reply(content="Hi there", prompt_tokens=111, cached_tokens=100),
        chat_stream(content="Hi there", prompt_tokens=111, cached_tokens=100),
    )
    r = c.messages.create(model="m", max_tokens=20, messages=HI)
    assert r.usage.input_tokens == 11 and r.usage.cache_read_input_tokens == 100
    with c.messages.stream(model="m", max_tokens=20, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.usage.input_tokens == 11 and final.usage.cache_read_input_tokens == 100


def _key_info(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/key/info", headers={"Authorization": f"Bearer {KEY}"})
    out: dict[str, Any] = json.loads(conn.getresponse().read())["info"]
    conn.close()
    return out


def test_spend_prices_cache_reads_and_writes_and_limits_count_every_input_token(
    gateway: GatewayFactory, claude: AnthropicUpstream, tmp_path: Path
) -> None:
    usage_log = tmp_path / "usage.jsonl"
    prices = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
    gw = gateway(
        {
            "model_list": [
                claude_entry(
                    "priced",
                    claude,
                    cache_read_input_token_cost=0.0001,
                    cache_creation_input_token_cost=0.00125,
                    **prices,
                ),
                # No cache prices: cached tokens cost the input price.
                claude_entry("plain", claude, **prices),
            ],
            "general_settings": {"master_key": MASTER_KEY, "usage_log": str(usage_log)},
            "keys": [{"key": KEY, "name": "team-cache"}],
        }
    )
    c = sdk(gw.base_url, KEY)
    claude.enqueue(CACHED)
    c.chat.completions.create(model="priced", messages=HI)
    spend = _key_info(gw.port)["spend"]
    # 13 plain at 0.001, 100 read at 0.0001, 20 written at 0.00125, 6 out at 0.002.
    assert spend["usd"] == pytest.approx(0.013 + 0.01 + 0.025 + 0.012)
    assert spend["tokens"] == 139
    line = json.loads(usage_log.read_text().splitlines()[-1])
    assert line["prompt_tokens"] == 133 and line["completion_tokens"] == 6
    assert line["prompt_cache_read_tokens"] == 100 and line["prompt_cache_write_tokens"] == 20
    assert line["cost_usd"] == pytest.approx(0.06)
    claude.enqueue(CACHED)
    c.chat.completions.create(model="plain", messages=HI)
    spend = _key_info(gw.port)["spend"]
    assert spend["usd"] == pytest.approx(0.06 + 133 * 0.001 + 6 * 0.002)
    assert spend["tokens"] == 2 * 139
    # A Messages client streamed natively from Anthropic: the counts come in two events
    # (message_start, message_delta) and are read from both.
    claude.enqueue(CACHED)
    a = anthropic_client(gw.base_url, KEY)
    with a.messages.stream(model="priced", max_tokens=20, messages=HI) as stream:
        final = stream.get_final_message()
    assert final.usage.input_tokens == 13 and final.usage.cache_read_input_tokens == 100
    assert claude.last_request.bare_path == "/v1/messages"
    spend = _key_info(gw.port)["spend"]
    assert spend["tokens"] == 3 * 139
    assert spend["usd"] == pytest.approx(2 * 0.06 + 133 * 0.001 + 6 * 0.002)


def test_a_translated_stream_without_include_usage_spends_what_was_used(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    # The client did not ask for usage: its events carry none, yet Anthropic reported it;
    # the spend counts that, not the reservation's estimate (1024 completion tokens).
    prices = {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002}
    gw = gateway(
        {
            "model_list": [claude_entry("priced", claude, **prices)],
            "general_settings": {"master_key": MASTER_KEY},
            "keys": [{"key": KEY, "name": "team-cache"}],
        }
    )
    claude.enqueue(CACHED)
    chunks = list(
        sdk(gw.base_url, KEY).chat.completions.create(model="priced", messages=HI, stream=True)
    )
    assert all(getattr(c, "usage", None) is None for c in chunks)
    spend = _key_info(gw.port)["spend"]
    assert spend["tokens"] == 139
    assert spend["usd"] == pytest.approx(133 * 0.001 + 6 * 0.002)
