"""Anthropic's Messages API, translated both ways.

OpenAI chat requests become ``POST {base}/v1/messages`` requests; Anthropic's
messages, errors and stream events come back as OpenAI chat completions, OpenAI
errors and ``chat.completion.chunk`` events (tool calls, reasoning and usage
included). Text completions and embeddings are refused with a 400 that says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from twisted.web.http_headers import Headers

from gatewayd.providers.base import (
    Endpoint,
    FailureKind,
    ProviderRequest,
    UpstreamFailure,
    openai_error,
)
from gatewayd.providers.openai import dump_json
from gatewayd.providers.sse import DONE, data_event, event_data
from gatewayd.providers.upstream import HTTPProvider, error_type_for, retry_after_seconds

ANTHROPIC_VERSION = "2023-06-01"
#: Anthropic requires max_tokens; OpenAI clients often leave it out.
DEFAULT_MAX_TOKENS = 4096

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}


def _client_error(message: str, param: str | None = None) -> UpstreamFailure:
    return UpstreamFailure(
        FailureKind.HTTP, 400, openai_error(message, "invalid_request_error", "unsupported", param)
    )


# -- request ---------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """The text of an OpenAI message content (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _image_block(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise _client_error("image_url.url must be a string", "messages")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";", 1)[0] or "image/png"
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """Anthropic content blocks for an OpenAI content value."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image_block(part))
    return blocks


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict):
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return {"type": "tool", "name": fn["name"]}
    raise _client_error(f"unsupported tool_choice {choice!r}", "tool_choice")


def to_anthropic(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat request."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise _client_error("messages must be a list", "messages")
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Consecutive messages of one role become one: Anthropic wants them alternating.
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": list(blocks)})

    for m in messages:
        if not isinstance(m, dict):
            raise _client_error("each message must be an object", "messages")
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content")))
        elif role == "user":
            add("user", _blocks(m.get("content")))
        elif role == "assistant":
            blocks = _blocks(m.get("content"))
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": fn.get("name"),
                        "input": args,
                    }
                )
            add("assistant", blocks)
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.get("tool_call_id"),
                        "content": _text_of(m.get("content")),
                    }
                ],
            )
        else:
            raise _client_error(f"unsupported message role {role!r}", "messages")

    req: dict[str, Any] = {"model": model, "messages": out}
    if system:
        req["system"] = "\n\n".join(system)
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    req["max_tokens"] = max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS
    stop = body.get("stop")
    if stop is not None:
        req["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            req[key] = body[key]
    tools = body.get("tools")
    if tools:
        req["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in tools
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and tools:
        choice = choice or {"type": "auto"}
        choice["disable_parallel_tool_use"] = True
    if choice is not None:
        req["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        req["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        req["stream"] = True
    return req


# -- response --------------------------------------------------------------------


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def to_openai(msg: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for an Anthropic message."""
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    usage = msg.get("usage") or {}
    return {
        "id": msg.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _STOP_REASONS.get(msg.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": _usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)),
    }


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` events out."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_index = -1
        self.block_tools: dict[int, int] = {}  # content block index -> tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            payload["usage"] = None
        return data_event(payload)

    def __call__(self, event: bytes) -> list[bytes]:
        raw = event_data(event)
        if raw is None:
            return []
        try:
            data = json.loads(raw)
        except ValueError:
            return []
        kind = data.get("type")
        if kind == "message_start":
            msg = data.get("message") or {}
            self.id = msg.get("id", "")
            self.model = msg.get("model", "")
            self.input_tokens = int((msg.get("usage") or {}).get("input_tokens") or 0)
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.tool_index += 1
                self.block_tools[int(data.get("index", 0))] = self.tool_index
                call = {
                    "index": self.tool_index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            dkind = delta.get("type")
            if dkind == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if dkind == "thinking_delta":
                return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
            if dkind == "input_json_delta":
                index = self.block_tools.get(int(data.get("index", 0)), self.tool_index)
                call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            usage = data.get("usage") or {}
            self.output_tokens = int(usage.get("output_tokens") or self.output_tokens)
            reason = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, _STOP_REASONS.get(reason or "", "stop"))]
        if kind == "message_stop":
            out = []
            if self.include_usage:
                out.append(
                    data_event(
                        {
                            "id": self.id,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": self.model,
                            "choices": [],
                            "usage": _usage(self.input_tokens, self.output_tokens),
                        }
                    )
                )
            out.append(DONE)
            return out
        if kind == "error":
            err = data.get("error") or {}
            return [
                data_event(
                    {
                        "error": openai_error(
                            err.get("message", "upstream error"), err.get("type", "api_error")
                        )
                    }
                )
            ]
        return []  # ping, content_block_stop, and event types added later


# -- the provider ----------------------------------------------------------------


class AnthropicProvider(HTTPProvider):
    """Chat over Anthropic's Messages API."""

    # Anthropic always ends a stream with message_stop (translated to [DONE]).
    stream_requires_done = True

    def build_request(self, request: ProviderRequest) -> tuple[bytes, Headers, bytes]:
        if request.endpoint is Endpoint.EMBEDDINGS:
            raise _client_error("Anthropic has no embeddings API; route embeddings elsewhere")
        if request.endpoint is not Endpoint.CHAT:
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
        if dep.api_key:
            headers.setRawHeaders(b"x-api-key", [dep.api_key.encode()])
        for k, v in dep.headers.items():
            headers.setRawHeaders(k.encode(), [v.encode()])
        body = to_anthropic(request.body, dep.model)
        url = f"{dep.api_base}/v1/messages"
        return url.encode("ascii"), headers, dump_json(body)

    def translate_response(
        self, request: ProviderRequest, body: bytes
    ) -> tuple[bytes, dict[str, Any]]:
        try:
            msg = json.loads(body)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or msg.get("type") != "message":
            raise self._bad_response("Anthropic returned a success status without a message")
        out = to_openai(msg)
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
        options = request.body.get("stream_options")
        include = isinstance(options, dict) and bool(options.get("include_usage"))
        return StreamTranslator(include)
