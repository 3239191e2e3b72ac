"""Prompt caching in usage, each dialect counting the way it does: OpenAI's
``prompt_tokens`` count every input token, Anthropic's ``input_tokens`` leave out the
cache reads and writes given beside them. Both directions, JSON and streamed; and the
limits' counts and spend with the cache prices."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from gatewayd.config import parse_config
from gatewayd.dialects.messages import from_chat
from gatewayd.dialects.messages_stream import MessagesStream
from gatewayd.dialects.responses import usage_of as responses_usage
from gatewayd.limits import Prices, Spent
from gatewayd.providers.anthropic import StreamTranslator, to_openai
from gatewayd.upstream.sse import SSEFramer, event_data

#: Anthropic's usage with a cache write and a cache read (the issue's numbers).
ANTHROPIC_USAGE = {
    "input_tokens": 13,
    "cache_creation_input_tokens": 20,
    "cache_read_input_tokens": 100,
    "output_tokens": 6,
}
#: OpenAI's usage with 100 of its 111 prompt tokens read from the cache.
OPENAI_USAGE = {
    "prompt_tokens": 111,
    "completion_tokens": 6,
    "total_tokens": 117,
    "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0},
}


def anthropic_message(usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "usage": usage,
    }


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def anthropic_stream(start_usage: dict[str, Any], delta_usage: dict[str, Any]) -> bytes:
    start = {**anthropic_message(start_usage), "content": [], "stop_reason": None}
    return b"".join(
        [
            sse("message_start", {"type": "message_start", "message": start}),
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            ),
            sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}},
            ),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": delta_usage,
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]
    )


def chat_usage_of_stream(raw: bytes) -> dict[str, Any]:
    t = StreamTranslator(include_usage=True)
    found: list[dict[str, Any]] = []
    for e in SSEFramer().feed(raw):
        for out in t(e):
            data = event_data(out)
            if data and data != b"[DONE]":
                obj = json.loads(data)
                if obj.get("usage"):
                    found.append(obj["usage"])
    assert len(found) == 1
    return found[0]


def assert_openai_counts_every_input_token(usage: dict[str, Any]) -> None:
    assert usage["prompt_tokens"] == 133  # 13 + 20 + 100
    assert usage["completion_tokens"] == 6 and usage["total_tokens"] == 139
    assert usage["prompt_tokens_details"]["cached_tokens"] == 100
    assert usage["prompt_tokens_details"]["cache_write_tokens"] == 20


# -- Anthropic upstream, OpenAI clients ------------------------------------------------


def test_anthropic_cache_counts_reach_chat_clients_json() -> None:
    assert_openai_counts_every_input_token(to_openai(anthropic_message(ANTHROPIC_USAGE))["usage"])


def test_anthropic_cache_counts_reach_chat_clients_streamed() -> None:
    # message_start has the input and cache counts, message_delta only the output.
    start = {**ANTHROPIC_USAGE, "output_tokens": 1}
    usage = chat_usage_of_stream(anthropic_stream(start, {"output_tokens": 6}))
    assert_openai_counts_every_input_token(usage)


def test_a_later_message_delta_with_every_count_wins() -> None:
    # Newer APIs repeat the (final) input and cache counts in message_delta.
    start = {"input_tokens": 13, "output_tokens": 1}
    usage = chat_usage_of_stream(anthropic_stream(start, ANTHROPIC_USAGE))
    assert_openai_counts_every_input_token(usage)


def test_anthropic_cache_counts_reach_responses_clients() -> None:
    chat = to_openai(anthropic_message(ANTHROPIC_USAGE))["usage"]
    usage = responses_usage(chat)
    assert usage["input_tokens"] == 133 and usage["total_tokens"] == 139
    assert usage["input_tokens_details"] == {"cached_tokens": 100, "cache_write_tokens": 20}


# -- OpenAI upstream, Messages clients -------------------------------------------------


def chat_completion(usage: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": "Hi"}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }


def test_openai_cached_tokens_reach_messages_clients_json() -> None:
    usage = from_chat(chat_completion(OPENAI_USAGE), "m")["usage"]
    # Anthropic clients add the three: 11 + 100 = 111, not 211.
    assert usage["input_tokens"] == 11
    assert usage["cache_read_input_tokens"] == 100
    assert usage["cache_creation_input_tokens"] is None
    assert usage["output_tokens"] == 6


def test_openai_cached_tokens_reach_messages_clients_streamed() -> None:
    stage = MessagesStream("m")
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "up"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": OPENAI_USAGE},
    ]
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    out = stage.feed(raw + b"data: [DONE]\n\n") + stage.end()
    deltas = [
        json.loads(data)
        for e in SSEFramer().feed(out)
        if (data := event_data(e)) and b'"message_delta"' in data
    ]
    assert len(deltas) == 1
    usage = deltas[0]["usage"]
    assert usage["input_tokens"] == 11 and usage["cache_read_input_tokens"] == 100


def test_without_details_nothing_is_taken_off() -> None:
    plain = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    usage = from_chat(chat_completion(plain), "m")["usage"]
    assert usage["input_tokens"] == 9 and usage["cache_read_input_tokens"] is None


# -- limits and spend --------------------------------------------------------------


@pytest.mark.parametrize(
    "usage",
    [
        ANTHROPIC_USAGE,
        to_openai(anthropic_message(ANTHROPIC_USAGE))["usage"],
        responses_usage(to_openai(anthropic_message(ANTHROPIC_USAGE))["usage"]),
    ],
    ids=["anthropic", "chat", "responses"],
)
def test_limits_count_every_input_token_in_every_shape(usage: dict[str, Any]) -> None:
    assert Spent.from_usage(usage) == Spent(133, 6, cache_read=100, cache_write=20)


def test_openai_usage_is_not_counted_twice() -> None:
    assert Spent.from_usage(OPENAI_USAGE) == Spent(111, 6, cache_read=100)
    from_messages = from_chat(chat_completion(OPENAI_USAGE), "m")["usage"]
    assert Spent.from_usage(from_messages) == Spent(111, 6, cache_read=100)


def test_cache_reads_and_writes_have_their_own_prices() -> None:
    spent = Spent(133, 6, cache_read=100, cache_write=20)
    prices = Prices(input=1.0, output=10.0, cache_read=0.1, cache_write=1.25)
    assert prices.of(spent) == pytest.approx(13 * 1.0 + 100 * 0.1 + 20 * 1.25 + 6 * 10.0)
    # Not given: the input price.
    assert Prices(1.0, 10.0).of(spent) == pytest.approx(133 * 1.0 + 6 * 10.0)


def test_cache_prices_are_read_from_params_or_model_info() -> None:
    entry = {
        "model_name": "c",
        "params": {
            "model": "anthropic/claude-x",
            "api_key": "k",
            "input_cost_per_token": 3e-6,
            "cache_read_input_token_cost": 3e-7,
        },
        "model_info": {"cache_creation_input_token_cost": 3.75e-6},
    }
    dep = parse_config(yaml.safe_dump({"model_list": [entry]})).deployments[0]
    assert dep.cache_read_input_token_cost == 3e-7
    assert dep.cache_creation_input_token_cost == 3.75e-6
    plain = parse_config(yaml.safe_dump({"model_list": [{**entry, "params": {"model": "mock/x"}}]}))
    assert plain.deployments[0].cache_read_input_token_cost is None


def test_a_negative_cache_price_is_refused() -> None:
    entry = {"model_name": "c", "params": {"model": "mock/x", "cache_read_input_token_cost": -1}}
    with pytest.raises(Exception, match="cache_read_input_token_cost"):
        parse_config(yaml.safe_dump({"model_list": [entry]}))
