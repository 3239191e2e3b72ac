"""What the OpenAI-compatible provider sends upstream (URL, headers, body), and the
helpers that read upstream answers: Retry-After, error bodies, passed headers."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Mapping
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from gatewayd.config import Deployment, parse_config
from gatewayd.config.catalog import AZURE_AI_DEFAULT_API_VERSION, AZURE_DEFAULT_API_VERSION
from gatewayd.providers.base import Endpoint, ProviderRequest, UpstreamFailure
from gatewayd.providers.openai import OpenAICompatibleProvider
from gatewayd.providers.replies import error_object as _error_object
from gatewayd.providers.replies import passable_headers, retry_after_seconds
from gatewayd.providers.request_headers import bearer_headers

# providers.md: every OpenAI-compatible prefix's default base.
DEFAULT_BASES = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "together_ai": "https://api.together.xyz/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "fireworks_ai": "https://api.fireworks.ai/inference/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "perplexity": "https://api.perplexity.ai",
    "xai": "https://api.x.ai/v1",
    "nvidia_nim": "https://integrate.api.nvidia.com/v1",
    "cerebras": "https://api.cerebras.ai/v1",
    "sambanova": "https://api.sambanova.ai/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "huggingface": "https://router.huggingface.co/v1",
    "docker_model_runner": "http://localhost:12434/engines/llama.cpp/v1",
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
    "lm_studio": "http://localhost:1234/v1",
}
LOCAL = ("docker_model_runner", "ollama", "vllm", "lm_studio")
ENDPOINTS = [
    (Endpoint.CHAT, "chat/completions"),
    (Endpoint.COMPLETIONS, "completions"),
    (Endpoint.EMBEDDINGS, "embeddings"),
]
NOW = 1_700_000_000.0


@implementer(IAgent)
class NeverAgent:
    """Building a request must not touch the network."""

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        raise AssertionError("build_request must not send anything")


def deployment(params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Deployment:
    doc = {"model_list": [{"model_name": "alias", "params": dict(params)}]}
    (d,) = parse_config(json.dumps(doc), environ=dict(env or {})).deployments
    return d


def provider(
    params: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(deployment(params, env), NeverAgent(), Clock())


def build(
    params: Mapping[str, Any],
    body: dict[str, Any] | None = None,
    endpoint: Endpoint = Endpoint.CHAT,
    *,
    stream: bool = False,
    env: Mapping[str, str] | None = None,
) -> tuple[str, Headers, bytes]:
    request = ProviderRequest(endpoint, body or {"model": "alias", "messages": []}, stream)
    url, headers, data = provider(params, env).build_request(request)
    assert isinstance(url, bytes) and isinstance(data, bytes)
    return url.decode("ascii"), headers, data


def header(headers: Headers, name: str) -> list[str] | None:
    raw = headers.getRawHeaders(name.encode())
    return None if raw is None else [v.decode() for v in raw]


# -- URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "suffix"), ENDPOINTS)
@pytest.mark.parametrize("prefix", sorted(DEFAULT_BASES))
def test_url_for_default_base(prefix: str, endpoint: Endpoint, suffix: str) -> None:
    url, _, _ = build({"model": f"{prefix}/m", "api_key": "k"}, endpoint=endpoint)
    assert url == f"{DEFAULT_BASES[prefix]}/{suffix}"


@pytest.mark.parametrize(("endpoint", "suffix"), ENDPOINTS)
def test_perplexity_has_no_v1(endpoint: Endpoint, suffix: str) -> None:
    url, _, _ = build({"model": "perplexity/sonar"}, endpoint=endpoint)
    assert url == f"https://api.perplexity.ai/{suffix}"


def test_explicit_api_base_with_trailing_slash() -> None:
    url, _, _ = build({"model": "vllm/m", "api_base": "http://gpu:8000/v1/"})
    assert url == "http://gpu:8000/v1/chat/completions"


def test_unknown_provider_uses_its_api_base() -> None:
    url, headers, data = build({"model": "acme/big", "api_base": "https://llm.acme.test/v1"})
    assert url == "https://llm.acme.test/v1/chat/completions"
    assert header(headers, "authorization") is None
    assert json.loads(data)["model"] == "big"


def test_stream_flag_does_not_change_the_url() -> None:
    a = build({"model": "openai/m"}, {"model": "x", "stream": True}, stream=True)
    b = build({"model": "openai/m"}, {"model": "x", "stream": True}, stream=False)
    assert a[0] == b[0] and a[2] == b[2]


# -- Azure -----------------------------------------------------------------------

AZURE = {"model": "azure/my-gpt4o", "api_base": "https://res.openai.azure.com", "api_key": "azk"}


@pytest.mark.parametrize(("endpoint", "suffix"), ENDPOINTS)
def test_azure_deployment_url(endpoint: Endpoint, suffix: str) -> None:
    url, _, _ = build(AZURE, endpoint=endpoint)
    assert url == (
        f"https://res.openai.azure.com/openai/deployments/my-gpt4o/{suffix}"
        f"?api-version={AZURE_DEFAULT_API_VERSION}"
    )


def test_azure_api_version_from_params_and_env() -> None:
    url, _, _ = build({**AZURE, "api_version": "2024-02-15-preview"})
    assert url.endswith("/chat/completions?api-version=2024-02-15-preview")
    url, _, _ = build(AZURE, env={"AZURE_API_VERSION": "2025-03-01"})
    assert url.endswith("?api-version=2025-03-01")


def test_azure_deployment_name_is_quoted() -> None:
    url, _, _ = build({**AZURE, "model": "azure/my dep/x"})
    assert "/openai/deployments/my%20dep%2Fx/chat/completions?" in url


def test_azure_headers_use_api_key_not_authorization() -> None:
    _, headers, _ = build(AZURE)
    assert header(headers, "api-key") == ["azk"]
    assert header(headers, "authorization") is None
    assert header(headers, "content-type") == ["application/json"]


def test_azure_key_from_environment() -> None:
    params = {k: v for k, v in AZURE.items() if k != "api_key"}
    _, headers, _ = build(params, env={"AZURE_API_KEY": "env-azk"})
    assert header(headers, "api-key") == ["env-azk"]
    assert header(headers, "authorization") is None


def test_azure_body_keeps_deployment_as_model() -> None:
    _, _, data = build(AZURE, {"model": "alias", "messages": [{"role": "user", "content": "hi"}]})
    assert json.loads(data) == {
        "model": "my-gpt4o",
        "messages": [{"role": "user", "content": "hi"}],
    }


@pytest.mark.parametrize(("endpoint", "suffix"), ENDPOINTS)
def test_azure_v1_surface(endpoint: Endpoint, suffix: str) -> None:
    params = {
        **AZURE,
        "model": "azure/gpt-4o-mini",
        "api_base": "https://res.openai.azure.com/openai/v1/",
    }
    url, headers, data = build(params, endpoint=endpoint)
    assert url == f"https://res.openai.azure.com/openai/v1/{suffix}"
    assert "api-version" not in url
    assert json.loads(data)["model"] == "gpt-4o-mini"
    assert header(headers, "api-key") == ["azk"]
    assert header(headers, "authorization") is None


def test_azure_ai_foundry_host() -> None:
    params = {
        "model": "azure_ai/mistral-large",
        "api_base": "https://my-res.services.ai.azure.com",
        "api_key": "aik",
    }
    url, headers, data = build(params)
    assert url == (
        "https://my-res.services.ai.azure.com/models/chat/completions"
        f"?api-version={AZURE_AI_DEFAULT_API_VERSION}"
    )
    assert header(headers, "api-key") == ["aik"]
    assert header(headers, "authorization") is None
    assert json.loads(data)["model"] == "mistral-large"


def test_azure_ai_foundry_embeddings() -> None:
    params = {"model": "azure_ai/embed", "api_base": "https://r.services.ai.azure.com/"}
    url, _, _ = build(params, endpoint=Endpoint.EMBEDDINGS)
    assert url.startswith("https://r.services.ai.azure.com/models/embeddings?api-version=")


def test_azure_ai_serverless_host() -> None:
    params = {
        "model": "azure_ai/Meta-Llama-3-70B",
        "api_base": "https://my-endpoint.eastus2.models.ai.azure.com",
        "api_key": "slk",
    }
    url, headers, _ = build(params)
    assert url == "https://my-endpoint.eastus2.models.ai.azure.com/chat/completions"
    assert header(headers, "authorization") == ["Bearer slk"]
    assert header(headers, "api-key") is None


def test_azure_ai_look_alike_host_is_not_foundry() -> None:
    params = {"model": "azure_ai/m", "api_base": "https://services.ai.azure.com.evil.test"}
    url, _, _ = build(params)
    assert url == "https://services.ai.azure.com.evil.test/chat/completions"


# -- auth and extra headers ------------------------------------------------------


@pytest.mark.parametrize("prefix", sorted(DEFAULT_BASES))
def test_bearer_when_key_set(prefix: str) -> None:
    _, headers, _ = build({"model": f"{prefix}/m", "api_key": "sk-123"})
    assert header(headers, "authorization") == ["Bearer sk-123"]
    assert header(headers, "api-key") is None
    assert header(headers, "content-type") == ["application/json"]


def test_bearer_key_from_environment() -> None:
    _, headers, _ = build({"model": "groq/llama"}, env={"GROQ_API_KEY": "gsk"})
    assert header(headers, "authorization") == ["Bearer gsk"]


@pytest.mark.parametrize("prefix", LOCAL)
def test_local_provider_without_key_sends_no_auth(prefix: str) -> None:
    _, headers, _ = build({"model": f"{prefix}/m"})
    assert header(headers, "authorization") is None
    assert header(headers, "api-key") is None
    assert header(headers, "x-api-key") is None


def test_cloud_provider_without_key_sends_no_auth() -> None:
    _, headers, _ = build({"model": "openai/m"})
    assert header(headers, "authorization") is None


def test_extra_headers_sent() -> None:
    _, headers, _ = build(
        {
            "model": "openrouter/anthropic/claude",
            "api_key": "ork",
            "headers": {"HTTP-Referer": "https://app.test", "X-Title": "My App"},
            "extra_headers": {"X-Num": 7},
        }
    )
    assert header(headers, "http-referer") == ["https://app.test"]
    assert header(headers, "x-title") == ["My App"]
    assert header(headers, "x-num") == ["7"]
    assert header(headers, "authorization") == ["Bearer ork"]


def test_extra_headers_sent_to_azure_too() -> None:
    _, headers, _ = build({**AZURE, "headers": {"X-Ms-Useragent": "gw"}})
    assert header(headers, "x-ms-useragent") == ["gw"]
    assert header(headers, "api-key") == ["azk"]


def test_bearer_headers_helper() -> None:
    h = bearer_headers("k", [("X-A", "1")])
    assert header(h, "authorization") == ["Bearer k"]
    assert header(h, "x-a") == ["1"]
    assert header(h, "content-type") == ["application/json"]
    for empty in (None, ""):
        assert header(bearer_headers(empty), "authorization") is None


# -- body ------------------------------------------------------------------------


def test_body_model_replaced_everything_else_kept_in_order() -> None:
    body: dict[str, Any] = {
        "messages": [
            {"role": "system", "content": "Réponds en français 🙂"},
            {"role": "user", "content": [{"type": "text", "text": '日本語 \u2028 "quoted"'}]},
        ],
        "model": "alias",
        "x_custom": {"nested": [1, 2.5, None, True, {"deep": "ok"}]},
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 128,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 3,
        "reasoning_effort": "low",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {}}},
        "seed": 12345678901234567890,
    }
    _, _, data = build({"model": "groq/llama-3.1-8b-instant"}, body, stream=True)
    sent = json.loads(data.decode("utf-8"))
    assert list(sent) == list(body)
    assert sent == {**body, "model": "llama-3.1-8b-instant"}
    assert "日本語".encode() in data  # UTF-8, not \u escapes


def test_body_not_mutated() -> None:
    body: dict[str, Any] = {"model": "alias", "input": "x"}
    build({"model": "openai/text-embedding-3-small"}, body, Endpoint.EMBEDDINGS)
    assert body == {"model": "alias", "input": "x"}


def test_body_model_added_when_missing() -> None:
    _, _, data = build({"model": "ollama/llama3"}, {"prompt": "hi"}, Endpoint.COMPLETIONS)
    assert json.loads(data) == {"prompt": "hi", "model": "llama3"}


def test_body_upstream_model_after_first_slash() -> None:
    _, _, data = build({"model": "docker_model_runner/ai/smollm2"}, {"model": "smollm2"})
    assert json.loads(data) == {"model": "ai/smollm2"}


def test_body_is_compact_json() -> None:
    _, _, data = build({"model": "openai/gpt-4o"}, {"model": "a", "n": 1, "stop": ["x", "y"]})
    assert data == b'{"model":"gpt-4o","n":1,"stop":["x","y"]}'


# -- Retry-After -----------------------------------------------------------------


def headers_of(**values: str) -> Headers:
    return Headers({k.replace("_", "-").encode(): [v.encode()] for k, v in values.items()})


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5", 5.0), ("0", 0.0), ("1.5", 1.5), (" 7 ", 7.0), ("-3", 0.0)],
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert retry_after_seconds(headers_of(retry_after=value), now=NOW) == seconds


def test_retry_after_http_date() -> None:
    date = email.utils.formatdate(NOW + 120, usegmt=True)
    assert retry_after_seconds(headers_of(retry_after=date), now=NOW) == pytest.approx(120.0)


def test_retry_after_http_date_in_the_past() -> None:
    date = email.utils.formatdate(NOW - 60, usegmt=True)
    assert retry_after_seconds(headers_of(retry_after=date), now=NOW) == 0.0


def test_retry_after_ms() -> None:
    assert retry_after_seconds(headers_of(retry_after_ms="1500"), now=NOW) == 1.5
    assert retry_after_seconds(headers_of(retry_after_ms="250.5"), now=NOW) == pytest.approx(0.2505)


def test_retry_after_ms_wins_over_retry_after() -> None:
    h = headers_of(retry_after_ms="200", retry_after="30")
    assert retry_after_seconds(h, now=NOW) == 0.2


def test_garbage_retry_after_ms_falls_back_to_retry_after() -> None:
    h = headers_of(retry_after_ms="soon", retry_after="4")
    assert retry_after_seconds(h, now=NOW) == 4.0


@pytest.mark.parametrize("value", ["soon", "", "later maybe", "Mon, 99 Foo 2024 xx:yy:zz GMT"])
def test_retry_after_garbage_is_none(value: str) -> None:
    assert retry_after_seconds(headers_of(retry_after=value), now=NOW) is None


def test_retry_after_absent_is_none() -> None:
    assert retry_after_seconds(Headers(), now=NOW) is None
    assert retry_after_seconds(headers_of(retry_after_ms="nope"), now=NOW) is None


def test_retry_after_header_name_case_insensitive() -> None:
    h = Headers({b"Retry-After": [b"9"]})
    assert retry_after_seconds(h, now=NOW) == 9.0


# -- upstream error bodies -------------------------------------------------------


def test_openai_error_passes_through_with_extra_fields() -> None:
    upstream = {
        "error": {
            "message": "The response was filtered",
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "content_filter",
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {}},
        }
    }
    out = _error_object(400, json.dumps(upstream).encode())
    assert out == upstream["error"]


def test_partial_openai_error_gets_missing_fields() -> None:
    out = _error_object(429, b'{"error": {"message": "slow down"}}')
    assert out == {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}
    out = _error_object(500, b'{"error": {"code": 42}}')
    assert out["message"] == "" and out["type"] == "api_error" and out["code"] == 42


def test_ollama_style_string_error() -> None:
    out = _error_object(404, b'{"error": "model \\"llama9\\" not found, try pulling it first"}')
    assert out == {
        "message": 'model "llama9" not found, try pulling it first',
        "type": "not_found_error",
        "param": None,
        "code": None,
    }


@pytest.mark.parametrize(
    ("detail", "message"),
    [
        ("Not Found", "Not Found"),
        ([{"loc": ["body", "model"], "msg": "field required"}], None),
    ],
)
def test_fastapi_detail(detail: Any, message: str | None) -> None:
    out = _error_object(422, json.dumps({"detail": detail}).encode())
    assert out["type"] == "invalid_request_error"
    if message is not None:
        assert out["message"] == message
    else:
        assert json.loads(out["message"]) == detail


def test_top_level_message() -> None:
    out = _error_object(503, b'{"message": "overloaded", "object": "error"}')
    assert out["message"] == "overloaded"
    assert out["type"] == "api_error"


def test_html_body_mentions_status() -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    out = _error_object(502, html)
    assert "502" in out["message"]
    assert out["message"].startswith("upstream returned HTTP 502")
    assert out["type"] == "api_error"
    assert set(out) == {"message", "type", "param", "code"}


def test_long_text_body_is_truncated() -> None:
    out = _error_object(500, b"x" * 10_000)
    assert len(out["message"]) < 400


def test_empty_body_mentions_status() -> None:
    assert _error_object(503, b"")["message"] == "upstream returned HTTP 503"


def test_invalid_utf8_body() -> None:
    out = _error_object(500, b"\xff\xfe oops")
    assert "500" in out["message"] and "oops" in out["message"]


@pytest.mark.parametrize("body", [b"[1, 2]", b'"just a string"', b"null", b"42"])
def test_non_object_json_body(body: bytes) -> None:
    out = _error_object(500, body)
    assert out["message"].startswith("upstream returned HTTP 500")


@pytest.mark.parametrize(
    ("status", "type_"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (408, "timeout"),
        (409, "conflict_error"),
        (413, "invalid_request_error"),
        (418, "invalid_request_error"),
        (422, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "api_error"),
    ],
)
def test_error_type_by_status(status: int, type_: str) -> None:
    assert _error_object(status, b"oops")["type"] == type_


# -- passed headers --------------------------------------------------------------


def test_passable_headers() -> None:
    h = Headers(
        {
            b"X-Request-Id": [b"req-1"],
            b"x-ratelimit-remaining-requests": [b"99"],
            b"OpenAI-Processing-Ms": [b"12"],
            b"openai-organization": [b"org-1"],
            b"x-gatewayd-model": [b"forged"],
            b"X-Gatewayd-Attempts": [b"9"],
            b"content-type": [b"application/json"],
            b"content-length": [b"10"],
            b"set-cookie": [b"a=b"],
            b"server": [b"nginx"],
            b"retry-after": [b"3"],
        }
    )
    out = passable_headers(h)
    assert sorted(out) == sorted(
        [
            (b"x-request-id", b"req-1"),
            (b"x-ratelimit-remaining-requests", b"99"),
            (b"openai-processing-ms", b"12"),
            (b"openai-organization", b"org-1"),
        ]
    )


def test_passable_headers_keeps_every_value() -> None:
    h = Headers({b"x-multi": [b"1", b"2"]})
    assert passable_headers(h) == [(b"x-multi", b"1"), (b"x-multi", b"2")]


def test_passable_headers_empty() -> None:
    assert passable_headers(Headers()) == []


def test_azure_entra_id_token_is_sent_as_bearer() -> None:
    params = {"model": "azure/dep", "api_base": "https://res.openai.azure.com"}
    _, headers, _ = build(params, env={"AZURE_AD_TOKEN": "entra-token"})
    assert header(headers, "authorization") == ["Bearer entra-token"]
    assert header(headers, "api-key") is None
    _, headers, _ = build({**params, "azure_ad_token": "param-token"})
    assert header(headers, "authorization") == ["Bearer param-token"]
    # An api-key wins over a token.
    _, headers, _ = build(params, env={"AZURE_AD_TOKEN": "t", "AZURE_API_KEY": "k"})
    assert header(headers, "api-key") == ["k"] and header(headers, "authorization") is None


def test_an_upstream_echoing_our_secrets_does_not_leak_them() -> None:
    p = provider(
        {"model": "openai/m", "api_key": "sk-very-secret-key", "headers": {"x-token": "hdr-secret"}}
    )
    body = json.dumps(
        {
            "error": {
                "message": "Incorrect API key provided: sk-very-secret-key",
                "details": {"echo": ["hdr-secret", {"k": "sk-very-secret-key"}]},
            }
        }
    )
    failure = p._redact(Failure(p.translate_error(401, Headers(), body.encode())))
    assert isinstance(failure.value, UpstreamFailure)
    text = json.dumps(failure.value.error)
    assert "sk-very-secret-key" not in text and "hdr-secret" not in text
    assert "Incorrect API key provided: ***" in text
