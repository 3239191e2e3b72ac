"""GenAI semantic-convention attributes from OpenAI-shaped bodies and stream events."""

from __future__ import annotations

import json

from gatewayd.tracing.genai import (
    StreamFacts,
    operation_for,
    provider_name,
    request_attributes,
    response_attributes,
    usage_attributes,
)


def test_operation_and_provider_names() -> None:
    assert operation_for("chat/completions") == "chat"
    assert operation_for("/v1/chat/completions") == "chat"
    assert operation_for("/completions") == "text_completion"
    assert operation_for("/v1/embeddings") == "embeddings"
    assert provider_name("azure") == "azure.ai.openai"
    assert provider_name("anthropic") == "anthropic"
    assert provider_name("groq") == "groq"


def test_request_attributes_keep_content_out_unless_captured() -> None:
    body: dict[str, object] = {
        "model": "a",
        "messages": [{"role": "user", "content": "secret prompt"}],
        "max_completion_tokens": 9,
        "temperature": 0.2,
        "top_p": True,  # not a number
    }
    attrs = request_attributes(body, capture=False)
    assert attrs == {"gen_ai.request.max_tokens": 9, "gen_ai.request.temperature": 0.2}
    captured = request_attributes(body, capture=True)
    assert "secret prompt" in captured["gen_ai.input.messages"]


def test_response_attributes() -> None:
    body = {
        "id": "chatcmpl-1",
        "model": "gpt-x-2025",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "yo"},
                "finish_reason": "length",
            },
        ],
    }
    usage = {"prompt_tokens": 3, "completion_tokens": 2}
    attrs = response_attributes(json.dumps(body).encode(), usage, capture=False)
    assert attrs == {
        "gen_ai.response.model": "gpt-x-2025",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.finish_reasons": ["stop", "length"],
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 2,
    }
    assert (
        "yo" in response_attributes(json.dumps(body).encode(), None, True)["gen_ai.output.messages"]
    )
    assert response_attributes(b"not json", None, False) == {}


def chunk(**fields: object) -> bytes:
    return b"data: " + json.dumps({"object": "chat.completion.chunk", **fields}).encode() + b"\n\n"


def test_stream_facts_read_only_what_events_carry() -> None:
    facts = StreamFacts()
    facts.read(
        chunk(model="m-1", choices=[{"delta": {"role": "assistant"}, "finish_reason": None}])
    )
    facts.read(chunk(model="m-1", choices=[{"delta": {"content": "x"}, "finish_reason": None}]))
    facts.read(chunk(model="m-1", choices=[{"delta": {}, "finish_reason": "tool_calls"}]))
    facts.read(chunk(model="m-1", choices=[], usage={"prompt_tokens": 5, "completion_tokens": 7}))
    assert not facts.done
    facts.read(b"data: [DONE]\n\n")
    assert facts.done
    assert facts.attributes() == {
        "gen_ai.request.stream": True,
        "gen_ai.response.model": "m-1",
        "gen_ai.response.finish_reasons": ["tool_calls"],
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.usage.output_tokens": 7,
    }


def test_usage_attributes_count_every_input_token_with_the_cache_share() -> None:
    anthropic = {
        "input_tokens": 13,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100,
        "output_tokens": 6,
    }
    assert usage_attributes(anthropic) == {
        "gen_ai.usage.input_tokens": 133,
        "gen_ai.usage.output_tokens": 6,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.usage.cache_creation.input_tokens": 20,
    }


def test_stream_facts_read_usage_from_anthropic_and_responses_events() -> None:
    facts = StreamFacts()
    start = {"type": "message_start", "message": {"model": "c", "usage": {"input_tokens": 13}}}
    facts.read(b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n")
    delta = {"type": "message_delta", "usage": {"output_tokens": 6}}
    facts.read(b"event: message_delta\ndata: " + json.dumps(delta).encode() + b"\n\n")
    assert facts.usage == {"input_tokens": 13, "output_tokens": 6}
    done = {"type": "response.completed", "response": {"usage": {"input_tokens": 5}}}
    other = StreamFacts()
    other.read(b"data: " + json.dumps(done).encode() + b"\n\n")
    assert other.usage == {"input_tokens": 5}
