# mypy: disable-error-code="call-overload,arg-type,list-item,index,union-attr"
"""The Anthropic Messages dialect end to end: the official anthropic SDK against the real
daemon, in front of an OpenAI-format upstream (translated) and an Anthropic one (native)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from conftest import MASTER_KEY, GatewayFactory, openai_entry, sdk
from dialect_checks import check_message, check_message_events, post, request

from gatewayd.testing import Error, FakeUpstream, StreamThenCut
from gatewayd.testing.anthropic_upstream import AnthropicError, AnthropicReply, AnthropicUpstream
from gatewayd.testing.replies import chat_reply, chat_stream, json_reply, responses_reply

ANT_KEY = "sk-ant-SECRET-123456"
HI = [{"role": "user", "content": "Hi"}]
TOOL = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
def claude() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream(api_key=ANT_KEY) as server:
        yield server


def claude_entry(alias: str, server: AnthropicUpstream) -> dict[str, Any]:
    return {
        "model_name": alias,
        "params": {"model": "anthropic/claude-x", "api_base": server.url, "api_key": ANT_KEY},
    }


def client(base_url: str, key: str = "none") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base_url.removesuffix("/v1"), api_key=key, max_retries=0)


def test_create_and_stream_translated_from_chat(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("m", upstream)]})
    c = client(gw.base_url)
    reply = c.messages.create(
        model="m",
        max_tokens=50,
        system=[{"type": "text", "text": "Be brief."}],
        messages=HI,
        stop_sequences=["END"],
        extra_body={"temperature": 0.5},
        metadata={"user_id": "u-1"},
    )
    assert reply.content[0].type == "text" and reply.content[0].text == "Hello from fake upstream"
    assert reply.stop_reason == "end_turn" and reply.model == "m"
    assert reply.usage.output_tokens == 4
    sent = upstream.last_request.json()
    assert upstream.last_request.bare_path == "/v1/chat/completions"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["max_tokens"] == 50 and sent["stop"] == ["END"] and sent["user"] == "u-1"
    with c.messages.stream(model="m", max_tokens=50, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from fake upstream" and final.usage.output_tokens == 4
    assert upstream.last_request.json()["stream_options"] == {"include_usage": True}
    # The raw bytes, checked against the SDK's types.
    r = post(gw.base_url + "/messages", {"model": "m", "max_tokens": 5, "messages": HI})
    check_message(r.content)
    r = post(
        gw.base_url + "/messages", {"model": "m", "max_tokens": 5, "messages": HI, "stream": True}
    )
    kinds = [e.type for e in check_message_events(r.content)]
    assert kinds[:2] == ["message_start", "ping"] and kinds[-2:] == [
        "message_delta",
        "message_stop",
    ]
    assert "content_block_delta" in kinds
    metrics = request("GET", gw.base_url.removesuffix("/v1") + "/metrics").text
    assert 'dialect="messages"' in metrics


def test_tool_round_trip_images_and_thinking_via_chat(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("m", upstream)]})
    c = client(gw.base_url)
    upstream.enqueue(
        chat_reply(reasoning="Think.", calls=[("call_1", "get_weather", {"city": "Paris"})])
    )
    first = c.messages.create(
        model="m",
        max_tokens=100,
        tools=[TOOL],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            }
        ],
    )
    assert first.stop_reason == "tool_use"
    assert [b.type for b in first.content] == ["thinking", "tool_use"]
    use = first.content[1]
    assert use.type == "tool_use" and use.input == {"city": "Paris"} and use.id == "call_1"
    sent = upstream.last_request.json()
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
    parts = sent["messages"][0]["content"]
    assert parts[1]["image_url"]["url"] == "data:image/png;base64,AAAA"
    assert parts[2]["image_url"]["url"] == "https://x.test/a.png"
    # Second turn: the tool's result goes back; the upstream sees a tool message.
    upstream.enqueue(chat_stream(content="Sunny in Paris"))
    with c.messages.stream(
        model="m",
        max_tokens=100,
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "Weather here?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "text" and final.content[0].text == "Sunny in Paris"
    sent = upstream.last_request.json()["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_1"
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert sent[3] == {"role": "user", "content": "Thanks"}
    # Streamed tool calls and reasoning become tool_use / thinking blocks.
    upstream.enqueue(
        chat_stream(reasoning="Hmm", calls=[("call_9", "get_weather", {"city": "Oslo"})])
    )
    r = post(
        gw.base_url + "/messages",
        {"model": "m", "max_tokens": 5, "messages": HI, "tools": [TOOL], "stream": True},
    )
    events = check_message_events(r.content)
    starts = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert starts == ["thinking", "tool_use"]
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "tool_use" and delta.usage.output_tokens == 5
    args = "".join(
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )
    assert json.loads(args) == {"city": "Oslo"}


def test_native_pass_through_to_anthropic(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    gw = gateway({"model_list": [claude_entry("c", claude)]})
    c = client(gw.base_url)
    blocks = [
        {"type": "thinking", "thinking": "Let me see.", "signature": "sig-1"},
        {"type": "text", "text": "It is sunny"},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    claude.enqueue(AnthropicReply(content=blocks))
    reply = c.messages.create(
        model="c",
        max_tokens=100,
        messages=HI,
        tools=[TOOL],
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"anthropic-beta": "tools-2099"},
        extra_body={"x_unknown_field": {"kept": [1, 2]}},
    )
    assert [b.type for b in reply.content] == ["thinking", "text", "tool_use"]
    assert reply.content[0].type == "thinking" and reply.content[0].signature == "sig-1"
    got = claude.last_request
    assert got.bare_path == "/v1/messages" and got.headers["x-api-key"] == ANT_KEY
    assert got.headers["anthropic-beta"] == "tools-2099"
    sent = got.json()
    assert sent["model"] == "claude-x" and sent["x_unknown_field"] == {"kept": [1, 2]}
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    with c.messages.stream(model="c", max_tokens=10, messages=HI) as stream:
        assert "".join(stream.text_stream) == "Hello from fake Anthropic"
    r = post(
        gw.base_url + "/messages", {"model": "c", "max_tokens": 5, "messages": HI, "stream": True}
    )
    kinds = [e.type for e in check_message_events(r.content)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert c.messages.count_tokens(model="c", messages=HI).input_tokens > 0
    assert claude.last_request.bare_path == "/v1/messages/count_tokens"
    # A native error keeps its type and status.
    claude.enqueue(AnthropicError(429, "rate_limit_error", "slow down", {"retry-after": "1"}))
    with pytest.raises(anthropic.RateLimitError) as info:
        c.messages.create(model="c", max_tokens=5, messages=HI)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["message"].startswith("slow down")
    # A stream the upstream breaks with an error event ends with that event.
    claude.enqueue(AnthropicReply(error_after=3))
    with (
        pytest.raises(anthropic.APIStatusError),
        c.messages.stream(model="c", max_tokens=5, messages=HI) as stream,
    ):
        for _ in stream:
            pass
    assert ANT_KEY not in gw.log()


def test_count_tokens_estimated_without_a_native_endpoint(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("m", upstream)]})
    count = client(gw.base_url).messages.count_tokens(model="m", messages=HI)
    assert count.input_tokens >= 1
    assert upstream.count() == 0


def test_errors_in_anthropic_shape(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("m", upstream)],
            "general_settings": {"master_key": MASTER_KEY, "max_request_body_size": 2000},
        }
    )
    good = client(gw.base_url, MASTER_KEY)
    with pytest.raises(anthropic.AuthenticationError) as auth:
        client(gw.base_url, "wrong").messages.create(model="m", max_tokens=5, messages=HI)
    assert auth.value.body["type"] == "error"
    assert auth.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as missing:
        good.messages.create(model="nope", max_tokens=5, messages=HI)
    assert missing.value.body["error"]["type"] == "not_found_error"
    url = gw.base_url + "/messages"
    key = {"x-api-key": MASTER_KEY}
    for body in ({"model": "m", "messages": HI}, {"model": "m", "max_tokens": 5}):
        refused = post(url, body, key)
        assert refused.status_code == 400
        assert refused.json()["error"]["type"] == "invalid_request_error"
    bad = post(url, b"{not json", key)
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error" and bad.json()["type"] == "error"
    big = post(
        url,
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 5000}]},
        key,
    )
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
    bearer = post(
        url,
        {"model": "m", "max_tokens": 5, "messages": HI},
        {"authorization": f"Bearer {MASTER_KEY}"},
    )
    assert bearer.status_code == 200
    # A field a chat upstream cannot take: a 400 naming it.
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    with pytest.raises(anthropic.BadRequestError) as untranslatable:
        good.messages.create(model="m", max_tokens=5, messages=HI, tools=[server_tool])
    assert "tools[0]" in untranslatable.value.message
    assert upstream.count() == 1
    for status, kind in (
        (429, anthropic.RateLimitError),
        (529, anthropic.OverloadedError),
        (500, anthropic.InternalServerError),
    ):
        upstream.enqueue(Error(status))
        with pytest.raises(kind) as info:
            good.messages.create(model="m", max_tokens=5, messages=HI)
        assert info.value.body["type"] == "error"
    # A stream that breaks after it started ends with an error event.
    upstream.enqueue(StreamThenCut(3))
    r = post(url, {"model": "m", "max_tokens": 5, "messages": HI, "stream": True}, key)
    events = check_message_events(r.content)
    assert events[-1].type == "error" and events[-1].error["type"] == "api_error"
    assert "message_stop" not in r.text
    assert MASTER_KEY not in gw.log()


def test_drop_params_drops_what_cannot_be_translated(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("m", upstream, drop_params=True)]})
    server_tool = {"type": "web_search_20250305", "name": "web_search"}
    reply = client(gw.base_url).messages.create(
        model="m",
        max_tokens=5,
        messages=HI,
        tools=[server_tool, TOOL],
    )
    assert reply.content[0].type == "text"
    assert [t["function"]["name"] for t in upstream.last_request.json()["tools"]] == ["get_weather"]


def test_retries_and_fallbacks_cross_dialects(
    gateway: GatewayFactory, upstream: FakeUpstream, claude: AnthropicUpstream
) -> None:
    """A native attempt that fails falls back to a translated one, and back again."""
    gw = gateway(
        {
            "model_list": [claude_entry("c", claude), openai_entry("m", upstream)],
            "general_settings": {"fallbacks": [{"c": ["m"]}, {"m": ["c"]}]},
        }
    )
    claude.enqueue(AnthropicError(529))
    raw = client(gw.base_url).messages.with_raw_response.create(
        model="c", max_tokens=5, messages=HI
    )
    assert raw.headers["x-gatewayd-fallback"] == "m"
    assert raw.headers["x-gatewayd-attempts"] == "2"
    assert raw.parse().content[0].text == "Hello from fake upstream"
    upstream.enqueue(Error(503))
    r = post(
        gw.base_url + "/messages", {"model": "m", "max_tokens": 5, "messages": HI, "stream": True}
    )
    assert r.headers["x-gatewayd-fallback"] == "c"
    events = check_message_events(r.content)
    assert events[-1].type == "message_stop"
    assert claude.last_request.json()["stream"] is True


def test_api_dialects_makes_an_openai_compatible_server_native(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    entry = {
        "model_name": "local",
        "params": {
            "model": "vllm/qwen",
            "api_base": upstream.url,
            "api_dialects": ["chat", "messages", "responses"],
        },
    }
    gw = gateway({"model_list": [entry]})
    message = {
        "id": "msg_local",
        "type": "message",
        "role": "assistant",
        "model": "qwen",
        "content": [{"type": "text", "text": "native local"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
        "x_server_extra": 1,
    }
    upstream.enqueue(json_reply(message), responses_reply("native responses"))
    r = post(gw.base_url + "/messages", {"model": "local", "max_tokens": 5, "messages": HI})
    assert r.json() == message
    assert upstream.last_request.bare_path == "/v1/messages"
    assert upstream.last_request.json() == {"model": "qwen", "max_tokens": 5, "messages": HI}
    out = sdk(gw.base_url).responses.create(model="local", input="x")
    assert out.output_text == "native responses"
    assert upstream.last_request.bare_path == "/v1/responses"
