"""The Responses dialect's pure translations, the response store, and the config keys."""

from __future__ import annotations

import json
from typing import Any

import openai.types.responses as rt
import pytest
from dialect_checks import check_response_events
from twisted.internet.task import Clock

from gatewayd.config import ConfigError, parse_config
from gatewayd.dialects import Dialect
from gatewayd.dialects.errors import TranslationError
from gatewayd.dialects.responses import from_chat, to_chat
from gatewayd.dialects.responses_stream import ResponsesStream
from gatewayd.dialects.store import MemoryResponseStore, StoredResponse
from gatewayd.providers.dialect import native_dialects
from gatewayd.testing.replies import chat_completion, chat_stream


def test_request_to_chat() -> None:
    body = {
        "model": "m",
        "instructions": "Sys",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,AA",
                        "detail": "low",
                    },
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "I will call"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2", "output": "two"},
        ],
        "tools": [
            {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
        ],
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "text": {
            "format": {
                "type": "json_schema",
                "name": "S",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
        "reasoning": {"effort": "high", "summary": "auto"},
        "max_output_tokens": 99,
        "store": True,
        "metadata": {"a": "b"},
        "stream": True,
        "include": [],
    }
    chat = to_chat(body)
    m = chat["messages"]
    assert m[0] == {"role": "system", "content": "Sys"}
    assert m[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA", "detail": "low"},
    }
    assert m[2]["content"] == "I will call"
    assert [c["id"] for c in m[2]["tool_calls"]] == ["c1", "c2"]  # one assistant turn
    assert m[3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]
    assert chat["tools"][0]["function"] == {
        "name": "f",
        "parameters": {"type": "object"},
        "strict": True,
    }
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "S", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["reasoning_effort"] == "high" and chat["max_tokens"] == 99
    assert chat["parallel_tool_calls"] is False
    assert "metadata" not in chat and "store" not in chat


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": [{"type": "file_search"}]}, "tools[0] (file_search)"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0] (item_reference)"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format"),
    ],
)
def test_untranslatable(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        to_chat({"model": "m", "input": "x", **extra})
    assert info.value.param == param
    to_chat({"model": "m", "input": "x", **extra}, drop=True)


def test_chat_to_response_validates() -> None:
    chat = chat_completion(content="hi", reasoning="r", calls=[("c1", "f", {"a": 1})])
    body = {"model": "m", "input": "x", "metadata": {"k": "v"}}
    out = from_chat(chat, body, "resp_1", "m")
    r = rt.Response.model_validate_json(json.dumps(out), strict=True)
    assert [o.type for o in r.output] == ["reasoning", "message", "function_call"]
    assert r.output_text == "hi" and r.status == "completed" and r.metadata == {"k": "v"}
    assert r.usage is not None and r.usage.total_tokens == 14
    cut = from_chat(chat_completion(content="x", finish_reason="length"), body, "resp_2", "m")
    assert cut["status"] == "incomplete"
    assert cut["incomplete_details"] == {"reason": "max_output_tokens"}


def test_chat_stream_to_events() -> None:
    done: list[dict[str, Any]] = []
    stage = ResponsesStream({"model": "m", "input": "x"}, "resp_1", "m", done.append)
    raw = b"".join(chat_stream(content="a b", reasoning="r", calls=[("c1", "f", {"x": 1})]).pieces)
    out = b"".join(stage.feed(raw[i : i + 5]) for i in range(0, len(raw), 5)) + stage.end()
    events = check_response_events(out)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for needed in (
        "response.reasoning_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    ):
        assert needed in kinds
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    assert json.loads(final.output[2].arguments) == {"x": 1}
    assert done and done[0]["id"] == "resp_1"


def test_stream_failure_is_error_then_failed() -> None:
    stage = ResponsesStream({"model": "m", "input": "x"}, "resp_1", "m")
    first = stage.feed(b"".join(chat_stream(content="a b").pieces[:2]))
    out = first + stage.fail(
        502, {"message": "cut", "type": "api_connection_error", "code": "upstream_stream_broken"}
    )
    events = check_response_events(out)
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-2].code == "upstream_stream_broken"
    assert not stage.complete


def test_memory_store_ttl_and_bound() -> None:
    clock = Clock()
    store = MemoryResponseStore(clock, max_bytes=100)
    store.put("a", b"x" * 40, ttl=10)
    store.put("b", b"y" * 40, ttl=100)
    got: list[Any] = []
    store.get("a").addCallback(got.append)
    assert got == [b"x" * 40]
    store.put("c", b"z" * 40, ttl=100)  # over the bound: the oldest goes
    store.get("a").addCallback(got.append)
    assert got[-1] is None and store.size == 80
    clock.advance(101)
    store.get("b").addCallback(got.append)
    assert got[-1] is None
    store.put("huge", b"h" * 101, ttl=10)
    assert len(store) <= 1
    deleted: list[bool] = []
    store.delete("c").addCallback(deleted.append)
    store.delete("c").addCallback(deleted.append)
    assert deleted == [False, False]  # c expired with the clock


def test_stored_response_round_trip() -> None:
    record = StoredResponse({"id": "r", "output": [{"type": "message"}]}, [{"role": "user"}], "dep")
    back = StoredResponse.load(record.dump())
    assert back == record
    assert back.history() == [{"role": "user"}, {"type": "message"}]


def _deployment(yaml: str) -> Any:
    (dep,) = parse_config(yaml, environ={}).deployments
    return dep


def test_native_dialects_and_config_keys() -> None:
    base = "model_list: [{model_name: a, params: {model: %s, api_base: 'http://h', api_key: k%s}}]"
    assert native_dialects(_deployment(base % ("openai/x", ""))) == {
        Dialect.CHAT,
        Dialect.RESPONSES,
    }
    assert native_dialects(_deployment(base % ("anthropic/x", ""))) == {Dialect.MESSAGES}
    assert native_dialects(_deployment(base % ("vllm/x", ""))) == {Dialect.CHAT}
    dep = _deployment(base % ("vllm/x", ", api_dialects: [responses, messages], drop_params: true"))
    assert native_dialects(dep) == {Dialect.CHAT, Dialect.RESPONSES, Dialect.MESSAGES}
    assert dep.extra["drop_params"] is True
    with pytest.raises(ConfigError) as info:
        _deployment(base % ("vllm/x", ", api_dialects: [grpc]"))
    assert "api_dialects" in str(info.value)
    with pytest.raises(ConfigError):
        _deployment(base % ("vllm/x", ", drop_params: maybe"))
    g = parse_config(
        "model_list: [{model_name: a, params: {model: mock/x}}]\n"
        "general_settings: {drop_params: true, response_store_ttl: 60, response_store_max_bytes: 1000}",
        environ={},
    ).general
    assert g.drop_params and g.response_store_ttl == 60 and g.response_store_max_bytes == 1000
    lite = parse_config(
        "model_list: [{model_name: a, params: {model: mock/x}}]\nlitellm_settings: {drop_params: true}",
        environ={},
    ).general
    assert lite.drop_params
    with pytest.raises(ConfigError) as bad:
        parse_config(
            "model_list: [{model_name: a, params: {model: mock/x}}]\n"
            "general_settings: {response_store_ttl: -1}",
            environ={},
        )
    assert "response_store_ttl" in str(bad.value)


def test_native_urls() -> None:
    from gatewayd.providers.base import Endpoint, ProviderRequest
    from gatewayd.providers.openai import OpenAICompatibleProvider

    def url(model: str, extra: str = "") -> str:
        template = "model_list: [{model_name: a, params: {model: %s, api_base: 'http://h/v1'%s}}]"
        dep = _deployment(template % (model, extra))
        provider = OpenAICompatibleProvider(dep, None, Clock())  # type: ignore[arg-type]
        return provider.url_for(ProviderRequest(Endpoint.RESPONSES, {}))

    assert url("openai/x") == "http://h/v1/responses"
    assert url("azure/dep", ", api_version: 2025-04-01-preview") == (
        "http://h/v1/openai/responses?api-version=2025-04-01-preview"
    )


def test_an_in_band_error_then_a_broken_end_is_said_once() -> None:
    from gatewayd.dialects.messages_stream import MessagesStream
    from gatewayd.upstream.sse import data_event

    error = {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}
    for stage in (ResponsesStream({"model": "m"}, "resp_1", "m"), MessagesStream("m")):
        out = stage.feed(
            b"".join(chat_stream(content="a b").pieces[:2]) + data_event({"error": error})
        )
        out += stage.fail(502, {"message": "ended without [DONE]"})
        assert out.count(b"event: error") == 1, out
        assert b"ended without" not in out


@pytest.mark.parametrize(
    "body",
    [
        {"input": [5]},
        {"input": [{"type": "function_call_output", "output": [5]}]},
        {"input": [{"role": "user", "content": [5]}]},
        {"input": "x", "tools": [5]},
        {"input": "x", "text": {"format": 5}},
        {"input": "x", "reasoning": "high"},
    ],
)
def test_garbage_is_a_client_error_never_a_crash(body: dict[str, Any]) -> None:
    from gatewayd.providers.base import AttemptLimits, Endpoint, ProviderRequest, UpstreamFailure
    from gatewayd.providers.dialect import send_in_dialect
    from gatewayd.providers.mock import MockProvider

    dep = _deployment("model_list: [{model_name: a, params: {model: mock/x}}]")
    call = ProviderRequest(Endpoint.RESPONSES, {"model": "a", **body}, dialect=Dialect.RESPONSES)
    results: list[Any] = []
    send_in_dialect(MockProvider(dep, Clock()), call, AttemptLimits(5, 5)).addBoth(results.append)
    (result,) = results
    if isinstance(getattr(result, "value", None), UpstreamFailure):
        assert result.value.status == 400
