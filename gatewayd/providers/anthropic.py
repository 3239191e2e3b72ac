"""Anthropic's Messages API: translated from and to chat, or passed through natively.

OpenAI chat requests become ``POST {base}/v1/messages`` requests; Anthropic's
messages, errors and stream events come back as OpenAI chat completions, OpenAI
errors and ``chat.completion.chunk`` events (tool calls, reasoning and usage
included). The translation itself lives in :mod:`gatewayd.dialects.anthropic_chat`.
A Messages client's request (:attr:`Endpoint.MESSAGES`, ``COUNT_TOKENS``) passes
through with only ``model`` replaced. Text completions and embeddings are refused
with a 400 that says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web.http_headers import Headers

from gatewayd.dialects.anthropic_chat import (
    DEFAULT_MAX_TOKENS,
    structured_tool,
    to_anthropic,
    to_openai,
)
from gatewayd.dialects.anthropic_stream import StreamTranslator
from gatewayd.dialects.errors import TranslationError
from gatewayd.providers.base import (
    Endpoint,
    FailureKind,
    ProviderRequest,
    UpstreamFailure,
    openai_error,
)
from gatewayd.providers.http_provider import HTTPProvider, error_type_for, retry_after_seconds
from gatewayd.providers.openai import dump_json, upstream_body

ANTHROPIC_VERSION = "2023-06-01"
_NATIVE = (Endpoint.MESSAGES, Endpoint.COUNT_TOKENS)
#: Client headers a native request carries on (beta features, the API version asked for).
FORWARDED = ("anthropic-version", "anthropic-beta")

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicProvider",
    "StreamTranslator",
    "to_anthropic",
    "to_openai",
]


def _client_error(message: str, param: str | None = None) -> UpstreamFailure:
    return UpstreamFailure(
        FailureKind.HTTP, 400, openai_error(message, "invalid_request_error", "unsupported", param)
    )


def drop_params(request: ProviderRequest, extra: Any) -> bool:
    """The deployment's ``drop_params`` when set, else the general one."""
    own = extra.get("drop_params") if hasattr(extra, "get") else None
    return own if isinstance(own, bool) else request.drop_params


class AnthropicProvider(HTTPProvider):
    """Chat over Anthropic's Messages API, and Messages passed through."""

    # Anthropic always ends a stream with message_stop (translated to [DONE]).
    stream_requires_done = True

    def build_request(self, request: ProviderRequest) -> tuple[bytes, Headers, bytes]:
        if request.endpoint is Endpoint.EMBEDDINGS:
            raise _client_error("Anthropic has no embeddings API; route embeddings elsewhere")
        if request.endpoint not in (Endpoint.CHAT, *_NATIVE):
            raise _client_error(
                "Anthropic models serve chat completions only (/v1/chat/completions)"
            )
        dep = self.deployment
        headers = Headers(
            {
                b"content-type": [b"application/json"],
                b"anthropic-version": [ANTHROPIC_VERSION.encode()],
            }
        )
        if request.endpoint in _NATIVE:
            for name, value in request.forward_headers:
                if name.lower() in FORWARDED:
                    headers.setRawHeaders(name.lower().encode(), [value.encode("latin-1")])
        if dep.api_key:
            headers.setRawHeaders(b"x-api-key", [dep.api_key.encode()])
        for k, v in dep.headers.items():
            headers.setRawHeaders(k.encode(), [v.encode()])
        if request.endpoint in _NATIVE:
            url = f"{dep.api_base}/v1/{request.endpoint.value}"
            return url.encode("ascii"), headers, upstream_body(request, dep.model)
        try:
            body = to_anthropic(request.body, dep.model, drop_params(request, dep.extra))
        except TranslationError as e:
            raise _client_error(e.message, e.param) from None
        url = f"{dep.api_base}/v1/messages"
        return url.encode("ascii"), headers, dump_json(body)

    def translate_response(
        self, request: ProviderRequest, body: bytes
    ) -> tuple[bytes, dict[str, Any]]:
        if request.endpoint in _NATIVE:
            return super().translate_response(request, body)
        try:
            msg = json.loads(body)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or msg.get("type") != "message":
            raise self._bad_response("Anthropic returned a success status without a message")
        forced = structured_tool(request.body)
        out = to_openai(msg, forced[0] if forced else None)
        return json.dumps(out).encode(), out

    def translate_error(self, status: int, headers: Headers, body: bytes) -> UpstreamFailure:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict):
            error = openai_error(
                str(err.get("message", "")), str(err.get("type") or error_type_for(status))
            )
            message = error["message"]
            if status == 400 and "prompt is too long" in message:
                error["code"] = "context_length_exceeded"
            failure = UpstreamFailure(
                FailureKind.HTTP,
                status,
                error,
                retry_after=retry_after_seconds(headers),
                deployment=self.deployment.id,
            )
        else:
            failure = super().translate_error(status, headers, body)
        return failure

    def stream_translator(self, request: ProviderRequest) -> Callable[[bytes], list[bytes]] | None:
        if request.endpoint in _NATIVE:
            return None
        options = request.body.get("stream_options")
        include = isinstance(options, dict) and bool(options.get("include_usage"))
        forced = structured_tool(request.body)
        return StreamTranslator(include, forced[0] if forced else None)
