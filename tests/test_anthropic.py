"""Anthropic translation: requests, responses, errors and stream events; and end to end
through the daemon against a fake upstream that speaks the Messages API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from conftest import GatewayFactory, sdk
from twisted.web.http_headers import Headers

from gatewayd.providers.anthropic import StreamTranslator, to_anthropic, to_openai
from gatewayd.testing import Error, FakeUpstream, RawResponse, SSEFramingStream
from gatewayd.upstream.sse import SSEFramer, event_data

# -- request translation -----------------------------------------------------------


def test_request_translation() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me check.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"q": "cat"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "call_2", "content": "also a cat"},
        ],
        "max_completion_tokens": 100,
        "stop": "END",
        "temperature": 0.2,
        "top_p": 0.9,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Look up",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "user": "u-42",
        "stream": True,
    }
    req = to_anthropic(body, "claude-sonnet-4-5")
    assert req["model"] == "claude-sonnet-4-5"
    assert req["system"] == "Be brief.\n\nUse metric."
    assert req["max_tokens"] == 100
    assert req["stop_sequences"] == ["END"]
    assert req["temperature"] == 0.2 and req["top_p"] == 0.9
    assert req["tools"] == [
        {
            "name": "lookup",
            "description": "Look up",
            "input_schema": {"type": "object", "properties": {}},
        }
    ]
    assert req["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert req["metadata"] == {"user_id": "u-42"}
    assert req["stream"] is True
    user, assistant, results = req["messages"]
    assert user["role"] == "user"
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert user["content"][2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://x.test/cat.jpg"},
    }
    assert assistant["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "cat"}},
    ]
    # Consecutive tool results merged into one user message.
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "also a cat"},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ],
)
def test_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tool_choice": choice}
    assert to_anthropic(body, "m")["tool_choice"] == expected


def test_max_tokens_default() -> None:
    assert (
        to_anthropic({"messages": [{"role": "user", "content": "hi"}]}, "m")["max_tokens"] == 4096
    )


# -- response translation ----------------------------------------------------------

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [
        {"type": "thinking", "thinking": "Hmm."},
        {"type": "text", "text": "Hello"},
        {"type": "text", "text": " there"},
        {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 10, "output_tokens": 5},
}


def test_response_translation() -> None:
    out = to_openai(MESSAGE)
    assert out["object"] == "chat.completion" and out["id"] == "msg_1"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Hello there"
    assert choice["message"]["reasoning_content"] == "Hmm."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
        }
    ]
    assert out["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


STREAM = [
    sse(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_2",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [],
                "usage": {"input_tokens": 7, "output_tokens": 1},
            },
        },
    ),
    sse("ping", {"type": "ping"}),
    sse(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    ),
    sse(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " you"},
        },
    ),
    sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    sse(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {}},
        },
    ),
    sse(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
        },
    ),
    sse(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": " 1}"},
        },
    ),
    sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
    sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 12},
        },
    ),
    sse("message_stop", {"type": "message_stop"}),
]


def translate_stream(include_usage: bool) -> list[Any]:
    t = StreamTranslator(include_usage)
    out: list[Any] = []
    for e in SSEFramer().feed(b"".join(STREAM)):
        for o in t(e):
            d = event_data(o)
            assert d is not None
            out.append("[DONE]" if d == b"[DONE]" else json.loads(d))
    return out


def test_stream_translation() -> None:
    events = translate_stream(include_usage=True)
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 12,
        "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    chunks = events[:-2]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_2" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Hi you"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"] == "toolu_9" and calls[0]["function"]["name"] == "f"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"a": 1}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert "[DONE]" == translate_stream(include_usage=False)[-1]
    assert all("usage" not in e for e in translate_stream(include_usage=False)[:-1])


# -- end to end --------------------------------------------------------------------


@pytest.fixture
def anthropic() -> Iterator[FakeUpstream]:
    with FakeUpstream(prefix="") as server:
        yield server


def json_response(payload: dict[str, Any], status: str = "200 OK") -> RawResponse:
    body = json.dumps(payload).encode()
    return RawResponse(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n".encode()
        + body
    )


def config(server: FakeUpstream, **general: Any) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": "claude",
                "params": {
                    "model": "anthropic/claude-sonnet-4-5",
                    "api_base": server.url,
                    "api_key": "sk-ant-SECRET",
                },
            }
        ],
        "general_settings": general,
    }


def test_end_to_end_chat_and_stream(gateway: GatewayFactory, anthropic: FakeUpstream) -> None:
    anthropic.enqueue(
        json_response(MESSAGE), SSEFramingStream([b"".join(STREAM[:5]), b"".join(STREAM[5:])])
    )
    gw = gateway(config(anthropic))
    c = sdk(gw.base_url)
    reply = c.chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "Short."}, {"role": "user", "content": "Hi"}],
    )
    assert reply.choices[0].message.content == "Hello there"
    assert reply.choices[0].finish_reason == "tool_calls"
    assert reply.usage is not None and reply.usage.total_tokens == 15
    req = anthropic.requests[0]
    assert req.bare_path == "/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-SECRET"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    sent = req.json()
    assert (
        sent["model"] == "claude-sonnet-4-5"
        and sent["system"] == "Short."
        and sent["max_tokens"] == 4096
    )
    chunks = list(
        c.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == "Hi you"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert anthropic.requests[1].json()["stream"] is True


def test_end_to_end_errors(gateway: GatewayFactory, anthropic: FakeUpstream) -> None:
    overloaded = json.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    anthropic.enqueue(
        Error(529, body=overloaded.encode(), headers={"content-type": "application/json"}),
        json_response(MESSAGE),
    )
    gw = gateway(config(anthropic, num_retries=1))
    c = sdk(gw.base_url)
    # A 529 (overloaded) is retried like any transient failure.
    assert (
        c.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}]).id
        == "msg_1"
    )
    bad = json.dumps(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: too big"},
        }
    )
    anthropic.enqueue(Error(400, body=bad.encode(), headers={"content-type": "application/json"}))
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 400
    assert "max_tokens: too big" in str(info.value)
    with pytest.raises(openai.BadRequestError) as info2:
        c.embeddings.create(model="claude", input="x")
    assert "embeddings" in str(info2.value)
    assert anthropic.count() == 3
    assert "sk-ant-SECRET" not in gw.log()


def test_error_translation_keeps_status_and_type() -> None:
    from twisted.internet.task import Clock

    from gatewayd.config import parse_config
    from gatewayd.providers.anthropic import AnthropicProvider

    (d,) = parse_config(
        "model_list: [{model_name: c, params: {model: anthropic/x, api_key: k}}]", environ={}
    ).deployments
    p = AnthropicProvider(d, None, Clock())  # type: ignore[arg-type]
    body = json.dumps(
        {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    )
    f = p.translate_error(429, Headers({b"retry-after": [b"3"]}), body.encode())
    assert f.status == 429 and f.retry_after == 3
    assert f.error == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    long = json.dumps(
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "message": "prompt is too long: 200001 tokens > 200000 maximum",
            },
        }
    )
    assert (
        p.translate_error(400, Headers(), long.encode()).error["code"] == "context_length_exceeded"
    )
