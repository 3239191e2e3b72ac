"""Fields OpenAI documents as nullable, sent as JSON null, through the real daemon to the
mock provider (issue 17): a null is the field's default, never a 400 or a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_e2e_api import raw

from gatewayd.testing import GatewayProcess

#: Nullable in OpenAI's schema for every endpoint below.
COMMON = ("n", "stream", "stream_options", "stop", "temperature", "top_p", "user", "seed")
CHAT_NULLS = (
    *COMMON,
    "max_tokens",
    "max_completion_tokens",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "metadata",
    "reasoning_effort",
    "service_tier",
    "parallel_tool_calls",
    "store",
    "response_format",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
)
COMPLETION_NULLS = (
    *COMMON,
    "max_tokens",
    "suffix",
    "echo",
    "logprobs",
    "best_of",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)


@pytest.fixture(scope="module")
def mock_gw() -> Any:
    proc = GatewayProcess({"model_list": [{"model_name": "m", "params": {"model": "mock/m"}}]})
    proc.start()
    yield proc
    proc.stop()


def post(gw: GatewayProcess, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, _, data = raw(
        gw.port, "POST", path, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    return status, json.loads(data)


def test_a_null_prompt_is_endoftext(mock_gw: GatewayProcess) -> None:
    status, body = post(mock_gw, "/v1/completions", {"model": "m", "prompt": None})
    assert status == 200, body
    assert body["object"] == "text_completion" and len(body["choices"]) == 1
    status, body = post(mock_gw, "/v1/completions", {"model": "m"})
    assert status == 400 and body["error"]["param"] == "prompt"  # absent: still required


@pytest.mark.parametrize("field", COMPLETION_NULLS)
def test_each_nullable_completion_field_may_be_null(mock_gw: GatewayProcess, field: str) -> None:
    status, body = post(mock_gw, "/v1/completions", {"model": "m", "prompt": "hi", field: None})
    assert status == 200, body


@pytest.mark.parametrize("field", CHAT_NULLS)
def test_each_nullable_chat_field_may_be_null(mock_gw: GatewayProcess, field: str) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    status, body = post(
        mock_gw, "/v1/chat/completions", {"model": "m", "messages": msgs, field: None}
    )
    assert status == 200, body


@pytest.mark.parametrize("field", ["dimensions", "encoding_format", "user"])
def test_each_nullable_embedding_field_may_be_null(mock_gw: GatewayProcess, field: str) -> None:
    status, body = post(mock_gw, "/v1/embeddings", {"model": "m", "input": "hi", field: None})
    assert status == 200, body


#: Nullable in the Responses API's schema.
RESPONSES_NULLS = (
    "instructions",
    "previous_response_id",
    "max_output_tokens",
    "metadata",
    "reasoning",
    "temperature",
    "top_p",
    "text",
    "tool_choice",
    "tools",
    "truncation",
    "user",
    "store",
    "stream",
    "parallel_tool_calls",
    "service_tier",
    "include",
)


@pytest.mark.parametrize("field", RESPONSES_NULLS)
def test_each_nullable_responses_field_may_be_null(mock_gw: GatewayProcess, field: str) -> None:
    status, body = post(mock_gw, "/v1/responses", {"model": "m", "input": "hi", field: None})
    assert status == 200, body
