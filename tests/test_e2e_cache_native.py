"""The cache with upstreams that speak the client's dialect natively: an Anthropic
Messages stream and an OpenAI Responses stream recorded as they came, replayed event by
event, and assembled into the JSON answer a non-streaming client asks for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from cache_client import post
from conftest import GatewayFactory, openai_entry, sdk

from gatewayd.testing import FakeUpstream
from gatewayd.testing.anthropic_upstream import AnthropicReply, AnthropicUpstream
from gatewayd.testing.replies import responses_reply

ANT_KEY = "sk-ant-upstream-SECRET-77"
HI: Any = [{"role": "user", "content": "use the tool"}]
BLOCKS: list[dict[str, Any]] = [
    {"type": "thinking", "thinking": "The user wants weather.", "signature": "sig-9"},
    {"type": "text", "text": "Checking now"},
    {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {"city": "Oslo"}},
]


@pytest.fixture
def claude() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream(api_key=ANT_KEY) as server:
        yield server


def test_a_native_messages_stream_is_replayed_and_assembled(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    claude.set_default(AnthropicReply(content=BLOCKS))
    entry = {
        "model_name": "c",
        "params": {"model": "anthropic/claude-x", "api_base": claude.url, "api_key": ANT_KEY},
    }
    gw = gateway({"model_list": [entry], "general_settings": {"cache": {"type": "memory"}}})
    body = {"model": "c", "max_tokens": 100, "messages": HI, "stream": True}
    first = post(gw.port, "/v1/messages", body)
    hit = post(gw.port, "/v1/messages", body)
    assert (first.cache, hit.cache) == ("miss", "hit")
    assert hit.chunks == first.chunks and b"message_stop" in hit.body
    assert b"thinking_delta" in hit.body and b"input_json_delta" in hit.body
    client = anthropic.Anthropic(
        base_url=gw.base_url.removesuffix("/v1"), api_key="x", max_retries=0
    )
    raw = client.messages.with_raw_response.create(model="c", max_tokens=100, messages=HI)
    assert raw.headers["x-gatewayd-cache"] == "hit"
    message = raw.parse()
    blocks: list[Any] = list(message.content)
    assert [b.type for b in blocks] == ["thinking", "text", "tool_use"]
    assert blocks[0].thinking == BLOCKS[0]["thinking"] and blocks[0].signature == "sig-9"
    assert blocks[1].text == "Checking now" and blocks[2].input == {"city": "Oslo"}
    assert message.stop_reason == "tool_use" and message.usage.output_tokens > 0
    assert len(claude.requests) == 1


def test_a_native_responses_stream_is_replayed_and_assembled(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(responses_reply("Native cached"))
    gw = gateway(
        {
            "model_list": [openai_entry("r", upstream)],
            "general_settings": {"cache": {"type": "memory"}},
        }
    )
    body = {"model": "r", "input": "say it", "stream": True}
    first = post(gw.port, "/v1/responses", body)
    hit = post(gw.port, "/v1/responses", body)
    assert (first.cache, hit.cache) == ("miss", "hit")
    assert hit.chunks == first.chunks and b"response.completed" in hit.body
    raw = sdk(gw.base_url).responses.with_raw_response.create(model="r", input="say it")
    assert raw.headers["x-gatewayd-cache"] == "hit"
    assert raw.parse().output_text == "Native cached"
    assert upstream.count("/responses") == 1
