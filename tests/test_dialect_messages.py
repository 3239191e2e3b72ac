"""The Messages dialect's pure translations: request to chat, chat to Message, chat
chunks to Anthropic events, errors; and the chat -> Anthropic egress additions."""

from __future__ import annotations

import json
from typing import Any

import anthropic.types as at
import pytest
from dialect_checks import check_message_events

from gatewayd.dialects.anthropic_chat import to_anthropic, to_openai
from gatewayd.dialects.anthropic_stream import StreamTranslator
from gatewayd.dialects.errors import TranslationError, anthropic_error
from gatewayd.dialects.messages import estimate_tokens, from_chat, to_chat
from gatewayd.dialects.messages_stream import MessagesStream
from gatewayd.testing.replies import chat_completion, chat_stream
from gatewayd.upstream.sse import data_event


def test_request_to_chat() -> None:
    body = {
        "model": "m",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "redacted_thinking", "data": "xx"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "tu1", "name": "f", "input": {"a": 1}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "tu1",
                        "content": [{"type": "text", "text": "boom"}],
                        "is_error": True,
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x/i.png"}},
                ],
            },
        ],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
        "stop_sequences": ["S"],
        "top_k": 5,
        "metadata": {"user_id": "u"},
        "thinking": {"type": "enabled", "budget_tokens": 4000},
        "stream": True,
    }
    chat = to_chat(body)
    assert chat["messages"][0] == {"role": "system", "content": "AB"}
    assert chat["messages"][2] == {
        "role": "assistant",
        "content": "calling",
        "tool_calls": [
            {"id": "tu1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
        ],
    }
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "tu1", "content": "Error: boom"}
    assert chat["messages"][4]["content"] == [
        {"type": "image_url", "image_url": {"url": "https://x/i.png"}}
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "parameters": {"type": "object"}, "description": "d"},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["parallel_tool_calls"] is False
    assert chat["stop"] == ["S"] and chat["top_k"] == 5 and chat["user"] == "u"
    assert chat["reasoning_effort"] == "medium" and chat["max_tokens"] == 64
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [], "container": "c"}, "container"),
        (
            {"messages": [], "tools": [{"type": "bash_20250124", "name": "bash"}]},
            "tools[0] (bash_20250124)",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0] (document)",
        ),
        ({"messages": "nope"}, "messages"),
    ],
)
def test_untranslatable_fields_name_themselves(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        to_chat({"model": "m", "max_tokens": 1, **body})
    assert info.value.param == param


def test_drop_params_drops_instead() -> None:
    chat = to_chat(
        {
            "model": "m",
            "max_tokens": 1,
            "container": "c",
            "messages": [
                {"role": "user", "content": [{"type": "document"}, {"type": "text", "text": "x"}]}
            ],
        },
        drop=True,
    )
    assert chat["messages"] == [{"role": "user", "content": "x"}]


def test_chat_to_message() -> None:
    chat = chat_completion(content="ok", reasoning="why", calls=[("c1", "f", {"x": 1})])
    msg = from_chat(chat, "alias")
    parsed = at.Message.model_validate_json(json.dumps(msg), strict=True)
    assert [b.type for b in parsed.content] == ["thinking", "text", "tool_use"]
    assert parsed.stop_reason == "tool_use" and parsed.model == "alias"
    assert parsed.usage.input_tokens == 9 and parsed.usage.output_tokens == 5
    assert (
        from_chat(chat_completion(content="x", finish_reason="length"), "a")["stop_reason"]
        == "max_tokens"
    )


def test_chat_stream_to_events() -> None:
    stage = MessagesStream("alias")
    stream = chat_stream(content="a b", reasoning="r", calls=[("c1", "f", {"x": 1})])
    # Fed in arbitrary pieces: the stage frames again.
    raw = b"".join(stream.pieces)
    out = b"".join(stage.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) + stage.end()
    events = check_message_events(out)
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert [e.content_block.type for e in events if e.type == "content_block_start"] == [
        "thinking",
        "text",
        "tool_use",
    ]
    assert kinds.count("content_block_stop") == 3
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.delta.stop_reason == "tool_use" and delta.usage.output_tokens == 5
    assert stage.complete


def test_stream_without_done_still_finishes_and_failure_is_an_error_event() -> None:
    stage = MessagesStream("a")
    out = stage.feed(b"".join(chat_stream(content="x", done=False).pieces)) + stage.end()
    assert [e.type for e in check_message_events(out)][-1] == "message_stop"
    stage = MessagesStream("a")
    stage.feed(b"".join(chat_stream(content="x").pieces[:2]))
    err = stage.fail(502, {"message": "cut", "type": "api_connection_error"})
    assert err.startswith(b"event: error\n")
    assert json.loads(err.split(b"data: ", 1)[1]) == {
        "type": "error",
        "error": {"type": "api_error", "message": "cut"},
    }
    assert stage.end() == b""


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "authentication_error"),
        (404, "invalid_request_error", "not_found_error"),
        (413, "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", "rate_limit_error"),
        (529, "overloaded_error", "overloaded_error"),
        (500, "server_error", "api_error"),
        (504, "timeout", "timeout_error"),
        (503, "service_unavailable", "overloaded_error"),
        (502, "api_connection_error", "api_error"),
    ],
)
def test_error_types(status: int, kind: str, expected: str) -> None:
    assert anthropic_error(status, {"message": "m", "type": kind})["error"]["type"] == expected


def test_count_estimate_grows_with_input() -> None:
    small = estimate_tokens({"messages": [{"role": "user", "content": "hi"}]})
    big = estimate_tokens({"messages": [{"role": "user", "content": "hi " * 400}]})
    assert 1 <= small < big


# -- the egress (chat -> Anthropic) additions ---------------------------------------------


def test_structured_output_becomes_a_forced_tool() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "Out", "schema": schema},
        },
        "reasoning_effort": "high",
    }
    req = to_anthropic(body, "claude")
    assert req["tools"][-1]["name"] == "Out" and req["tools"][-1]["input_schema"] == schema
    assert req["tool_choice"] == {"type": "tool", "name": "Out"}
    assert "thinking" not in req  # Anthropic refuses a forced tool with thinking
    msg = {
        "id": "msg_1",
        "type": "message",
        "content": [{"type": "tool_use", "id": "t", "name": "Out", "input": {"a": 1}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    chat = to_openai(msg, "Out")
    assert json.loads(chat["choices"][0]["message"]["content"]) == {"a": 1}
    assert (
        chat["choices"][0]["finish_reason"] == "stop"
        and "tool_calls" not in chat["choices"][0]["message"]
    )
    t = StreamTranslator(False, "Out")
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}},
        },
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "Out", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 2},
        },
    ]
    chunks = [json.loads(c[6:]) for e in events for c in t(data_event(e))]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert json.loads(text) == {"a": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_reasoning_effort_becomes_a_thinking_budget() -> None:
    req = to_anthropic(
        {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"}, "c"
    )
    assert req["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert req["max_tokens"] > 2048


@pytest.mark.parametrize("field", [{"n": 2}, {"logprobs": True}, {"logit_bias": {"1": 2}}])
def test_egress_refuses_what_anthropic_cannot_do(field: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], **field}
    with pytest.raises(TranslationError) as info:
        to_anthropic(body, "c")
    assert info.value.param == next(iter(field))
    assert "drop_params" in info.value.message
    assert "n" not in to_anthropic(body, "c", drop_params=True)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": [5]}]},
        {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "input": 3}]}]},
        {"messages": [{"role": "user", "content": "x"}], "tools": [5, {"name": "f"}]},
        {"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "bogus"}},
        {"messages": [5]},
        {"messages": [{"role": "user", "content": [{"type": "tool_result", "content": 5}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image", "source": 5}]}]},
    ],
)
def test_garbage_is_a_client_error_never_a_crash(body: dict[str, Any]) -> None:
    """Whatever the shape, a 400 through the provider seam, not an internal error."""
    from twisted.internet.task import Clock

    from gatewayd.config import parse_config
    from gatewayd.dialects import Dialect
    from gatewayd.providers.base import AttemptLimits, Endpoint, ProviderRequest, UpstreamFailure
    from gatewayd.providers.dialect import send_in_dialect
    from gatewayd.providers.mock import MockProvider

    (dep,) = parse_config(
        "model_list: [{model_name: a, params: {model: mock/x}}]", environ={}
    ).deployments
    call = ProviderRequest(
        Endpoint.MESSAGES, {"model": "a", "max_tokens": 5, **body}, dialect=Dialect.MESSAGES
    )
    results: list[Any] = []
    send_in_dialect(MockProvider(dep, Clock()), call, AttemptLimits(5, 5)).addBoth(results.append)
    (result,) = results
    if not isinstance(getattr(result, "value", None), UpstreamFailure):
        return  # translated into something acceptable
    assert result.value.status == 400
