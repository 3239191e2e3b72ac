"""The mock provider answers what OpenAI answers: every answer is checked strictly
against the openai SDK's types and against the fields of OpenAI's documented examples,
in memory, then once through the real daemon with the SDK."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import openai
import pytest
from conftest import GatewayFactory
from conftest import sdk as client
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gatewayd.config import parse_config
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    ProviderRequest,
    StreamSink,
    UpstreamFailure,
    UpstreamResponse,
)
from gatewayd.providers.mock import MockProvider

# OpenAI's documented answers (API reference examples): ours must have every field.
DOC_CHAT = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello! How can I assist you today?",
                "refusal": None,
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_44709d6fcb",
}
DOC_CHUNK = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1694268190,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
    "service_tier": "default",
    "choices": [
        {
            "index": 0,
            "delta": {},  # the first: {"role": "assistant", "content": "", "refusal": null}
            "logprobs": None,
        }
    ],
}
DOC_COMPLETION = {
    "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
    "object": "text_completion",
    "created": 1589478378,
    "model": "gpt-3.5-turbo-instruct",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "text": "\n\nThis is indeed a test",
            "index": 0,
            "logprobs": None,
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}
DOC_EMBEDDINGS = {
    "object": "list",
    "data": [{"object": "embedding", "embedding": [0.0023064255, -0.009327292], "index": 0}],
    "model": "text-embedding-ada-002",
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}


def assert_shape(ours: Any, doc: Any, path: str = "$") -> None:
    """Every field of ``doc`` is in ``ours``, with the same JSON type (null stays null)."""
    if isinstance(doc, dict):
        assert isinstance(ours, dict), path
        missing = set(doc) - set(ours)
        assert not missing, f"{path}: missing {sorted(missing)}"
        for k, v in doc.items():
            assert_shape(ours[k], v, f"{path}.{k}")
    elif isinstance(doc, list):
        assert isinstance(ours, list), path
        for i, item in enumerate(ours):
            if doc:
                assert_shape(item, doc[0], f"{path}[{i}]")
    elif doc is None:
        assert ours is None, f"{path}: {ours!r} is not null"
    else:
        kind = float if isinstance(doc, float) else type(doc)
        assert isinstance(ours, kind) and not isinstance(ours, bool), f"{path}: {ours!r}"


def strict(model: type[BaseModel], obj: dict[str, Any]) -> Any:
    return model.model_validate(obj, strict=True)


def mock(**params: Any) -> MockProvider:
    text = json.dumps(
        {"model_list": [{"model_name": "a", "params": {"model": "mock/m", **params}}]}
    )
    return MockProvider(parse_config(text, environ={}).deployments[0], Clock())


def answer(endpoint: Endpoint, body: dict[str, Any], **params: Any) -> dict[str, Any]:
    out: list[UpstreamResponse | Failure] = []
    mock(**params).send(ProviderRequest(endpoint, body), AttemptLimits(30, 30)).addBoth(out.append)
    result = out[0]
    assert isinstance(result, UpstreamResponse) and result.body is not None, result
    obj: dict[str, Any] = json.loads(result.body)
    return obj


def refusal(endpoint: Endpoint, body: dict[str, Any]) -> UpstreamFailure:
    out: list[Any] = []
    mock().send(ProviderRequest(endpoint, body), AttemptLimits(30, 30)).addBoth(out.append)
    assert isinstance(out[0], Failure) and isinstance(out[0].value, UpstreamFailure), out
    f: UpstreamFailure = out[0].value
    assert f.status == 400 and set(f.error) == {"message", "type", "param", "code"}
    assert f.error["type"] == "invalid_request_error" and f.deployment == "mock/m"
    return f


class Sink(StreamSink):
    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.ended = False

    def event(self, data: bytes) -> None:
        self.events.append(data)

    def end(self, failure: UpstreamFailure | None) -> None:
        assert failure is None
        self.ended = True


def stream(endpoint: Endpoint, body: dict[str, Any]) -> list[dict[str, Any]]:
    clock = Clock()
    text = json.dumps({"model_list": [{"model_name": "a", "params": {"model": "mock/m"}}]})
    provider = MockProvider(parse_config(text, environ={}).deployments[0], clock)
    out: list[Any] = []
    provider.send(ProviderRequest(endpoint, body, stream=True), AttemptLimits(30, 30)).addBoth(
        out.append
    )
    response = out[0]
    assert isinstance(response, UpstreamResponse) and response.stream is not None
    sink = Sink()
    response.stream.start(sink)
    for _ in range(200):
        if sink.ended:
            break
        clock.advance(1)
    assert sink.ended and sink.events[-1] == b"data: [DONE]\n\n"
    return [json.loads(e[len(b"data: ") :]) for e in sink.events[:-1]]


CHAT = {"model": "a", "messages": [{"role": "user", "content": "Hi"}]}


# -- chat ------------------------------------------------------------------------


def test_chat_answer_has_every_field_openai_sends() -> None:
    obj = answer(Endpoint.CHAT, CHAT)
    assert_shape(obj, DOC_CHAT)
    reply = strict(ChatCompletion, obj)
    assert reply.choices[0].message.refusal is None and "refusal" in obj["choices"][0]["message"]
    assert reply.choices[0].logprobs is None and reply.usage.total_tokens == (
        reply.usage.prompt_tokens + reply.usage.completion_tokens
    )


def test_chat_n_gives_n_choices_and_counts_their_tokens() -> None:
    one = answer(Endpoint.CHAT, CHAT)
    obj = answer(Endpoint.CHAT, {**CHAT, "n": 3})
    reply = strict(ChatCompletion, obj)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.message.content for c in reply.choices} == {one["choices"][0]["message"]["content"]}
    assert obj["usage"]["completion_tokens"] == 3 * one["usage"]["completion_tokens"]


def test_max_tokens_cuts_the_answer_with_finish_reason_length() -> None:
    obj = answer(Endpoint.CHAT, {**CHAT, "max_tokens": 2}, mock_response="one two three")
    assert obj["choices"][0]["message"]["content"] == "one two"
    assert obj["choices"][0]["finish_reason"] == "length"
    obj = answer(Endpoint.CHAT, {**CHAT, "max_completion_tokens": 5}, mock_response="one two")
    assert obj["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("n", 0, "integer_below_minimum"),
        ("n", 129, "integer_above_maximum"),
        ("n", "2", "invalid_type"),
        ("n", True, "invalid_type"),
        ("max_tokens", 0, "integer_below_minimum"),
    ],
)
def test_bad_chat_parameters_get_openais_400(field: str, value: Any, code: str) -> None:
    f = refusal(Endpoint.CHAT, {**CHAT, field: value})
    assert f.error["param"] == field and f.error["code"] == code
    assert f"'{field}'" in f.error["message"]


# -- streams ---------------------------------------------------------------------


def test_chat_stream_chunks_have_every_field_and_end_with_the_usage_chunk() -> None:
    chunks = stream(Endpoint.CHAT, {**CHAT, "stream_options": {"include_usage": True}})
    for c in chunks:
        strict(ChatCompletionChunk, c)
    for c in chunks[:-1]:
        assert_shape(c, DOC_CHUNK)
        assert "finish_reason" in c["choices"][0] and "usage" in c and c["usage"] is None
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
    assert_shape(last["usage"], DOC_CHAT["usage"])


def test_chat_stream_with_n_streams_each_choice_by_index() -> None:
    whole = answer(Endpoint.CHAT, CHAT)["choices"][0]["message"]["content"]
    chunks = stream(Endpoint.CHAT, {**CHAT, "n": 2, "stream_options": {"include_usage": True}})
    texts = {0: "", 1: ""}
    finishes = {}
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        texts[choice["index"]] += choice["delta"].get("content") or ""
        if choice["finish_reason"]:
            finishes[choice["index"]] = choice["finish_reason"]
    assert texts == {0: whole, 1: whole} and finishes == {0: "stop", 1: "stop"}
    one = answer(Endpoint.CHAT, CHAT)["usage"]["completion_tokens"]
    assert chunks[-1]["usage"]["completion_tokens"] == 2 * one


def test_stream_without_include_usage_has_no_usage_field() -> None:
    chunks = stream(Endpoint.CHAT, CHAT)
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"]


# -- completions -----------------------------------------------------------------


def test_completion_answer_has_every_field_openai_sends() -> None:
    obj = answer(Endpoint.COMPLETIONS, {"model": "a", "prompt": "Say hi"})
    assert_shape(obj, DOC_COMPLETION)
    strict(Completion, obj)


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [(["a", "b c"], 2), ([1, 2, 3], 1), ([[1, 2], [3]], 2), ("one", 1)],
)
def test_one_choice_per_prompt_and_per_n(prompt: Any, prompts: int) -> None:
    obj = answer(Endpoint.COMPLETIONS, {"model": "a", "prompt": prompt, "n": 2})
    reply = strict(Completion, obj)
    assert [c.index for c in reply.choices] == list(range(2 * prompts))


def test_completion_echo_puts_the_prompt_first_and_streams_follow_prompts() -> None:
    obj = answer(
        Endpoint.COMPLETIONS, {"model": "a", "prompt": "Q: ", "echo": True}, mock_response="A"
    )
    assert obj["choices"][0]["text"] == "Q: A"
    chunks = stream(Endpoint.COMPLETIONS, {"model": "a", "prompt": ["x", "y"]})
    for c in chunks:
        doc = {k: v for k, v in DOC_COMPLETION.items() if k not in ("usage", "choices")}
        assert_shape(c, {**doc, "choices": [{"text": "", "index": 0, "logprobs": None}]})
        assert "finish_reason" in c["choices"][0]
        # The SDK's type has no null finish_reason, though OpenAI streams one until the end.
        if c["choices"][0]["finish_reason"] is not None:
            strict(Completion, c)
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}


@pytest.mark.parametrize("prompt", [None, [], "", [1, "a"], [[1], []], {"a": 1}])
def test_bad_prompts_get_openais_400(prompt: Any) -> None:
    body: dict[str, Any] = {"model": "a"}
    if prompt is not None:
        body["prompt"] = prompt
    assert refusal(Endpoint.COMPLETIONS, body).error["param"] == "prompt"


# -- embeddings ------------------------------------------------------------------


def embed(**body: Any) -> dict[str, Any]:
    obj = answer(Endpoint.EMBEDDINGS, {"model": "a", **body})
    assert_shape(obj, DOC_EMBEDDINGS)
    strict(CreateEmbeddingResponse, obj)
    return obj


def test_a_token_array_is_one_input_and_arrays_of_them_are_many() -> None:
    assert len(embed(input=[1, 2, 3])["data"]) == 1
    assert embed(input=[1, 2, 3])["usage"]["prompt_tokens"] == 3
    two = embed(input=[[1, 2], [3]])
    assert [d["index"] for d in two["data"]] == [0, 1]
    assert two["data"][0]["embedding"] == embed(input=[1, 2])["data"][0]["embedding"]
    assert len(embed(input=["a", "b", "c"])["data"]) == 3


def test_dimensions_are_honoured_and_vectors_are_unit_length() -> None:
    for size in (1, 16, 256, 3072):
        (item,) = embed(input="hello", dimensions=size)["data"]
        assert len(item["embedding"]) == size
        assert abs(sum(v * v for v in item["embedding"]) - 1.0) < 1e-9
    assert len(embed(input="hello")["data"][0]["embedding"]) == 16


def test_base64_embeddings_are_the_float32_of_the_float_ones() -> None:
    floats = embed(input="hi", dimensions=8)["data"][0]["embedding"]
    b64 = answer(
        Endpoint.EMBEDDINGS,
        {"model": "a", "input": "hi", "dimensions": 8, "encoding_format": "base64"},
    )["data"][0]["embedding"]
    decoded = struct.unpack("<8f", base64.b64decode(b64))
    assert decoded == pytest.approx(floats, rel=1e-6)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": []}, "input"),
        ({"input": [1, "a"]}, "input"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "dimensions": 4000}, "dimensions"),
        ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_bad_embedding_requests_get_openais_400(body: dict[str, Any], param: str) -> None:
    assert refusal(Endpoint.EMBEDDINGS, {"model": "a", **body}).error["param"] == param


# -- through the daemon, with the SDK ---------------------------------------------------


def test_the_sdk_sees_openais_answers_through_the_gateway(gateway: GatewayFactory) -> None:
    gw = gateway({"model_list": [{"model_name": "demo", "params": {"model": "mock/demo"}}]})
    c = client(gw.base_url)
    reply = c.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Hi"}], n=2
    )
    assert [ch.index for ch in reply.choices] == [0, 1]
    assert "refusal" in reply.choices[0].message.model_fields_set
    assert reply.system_fingerprint and reply.service_tier == "default"
    emb = c.embeddings.create(model="demo", input=[1, 2, 3], dimensions=32)
    assert len(emb.data) == 1 and len(emb.data[0].embedding) == 32
    comp = c.completions.create(model="demo", prompt=["a", "b"])
    assert [ch.index for ch in comp.choices] == [0, 1]
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="demo", input="x", dimensions=0)
    assert e.value.code == "integer_below_minimum" and e.value.param == "dimensions"
