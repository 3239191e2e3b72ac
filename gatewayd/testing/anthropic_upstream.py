"""A fake Anthropic Messages API upstream for tests: :class:`AnthropicUpstream`.

A :class:`~gatewayd.testing.upstream.FakeUpstream` (a real HTTP server on loopback,
every request recorded) whose answers are Anthropic's:

* ``POST /v1/messages``: checks the request as Anthropic does (``x-api-key`` when the
  server has a key, ``anthropic-version``, ``model``, ``max_tokens``, ``messages``
  alternating from ``user``) and answers a ``Message``, or its event sequence with
  ``event:`` lines when ``"stream": true`` (``message_start``, ``content_block_*``,
  ``ping``, ``message_delta``, ``message_stop``);
* ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``;
* errors in Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``.

Script answers with :class:`AnthropicReply` (content blocks, stop reason, usage; an
``error_after`` to break a stream with an ``error`` event) and :class:`AnthropicError`,
queued with :meth:`~gatewayd.testing.upstream.FakeUpstream.enqueue` like any behaviour.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatewayd.testing.behaviours import RawResponse, RecordedRequest, SSEFramingStream
from gatewayd.testing.upstream import FakeUpstream

DEFAULT_TEXT = "Hello from fake Anthropic"


def _http(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> RawResponse:
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}.get(
        status, "Error"
    )
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        f"request-id: req_{uuid.uuid4().hex[:20]}",
    ]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return RawResponse(("\r\n".join(head) + "\r\n\r\n").encode() + body, close=False)


def error_body(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


@dataclass(frozen=True)
class AnthropicError:
    """Answer ``status`` with an Anthropic error body."""

    status: int
    type: str = "overloaded_error"
    message: str = "Overloaded"
    headers: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, record: RecordedRequest) -> RawResponse:
        return _http(self.status, error_body(self.type, self.message), self.headers)


@dataclass(frozen=True)
class AnthropicReply:
    """A successful answer: ``content`` blocks (default one text block), as JSON or as
    a stream. ``error_after`` breaks a stream after that many events with an
    ``overloaded_error`` event."""

    content: Sequence[Mapping[str, Any]] | None = None
    stop_reason: str | None = None
    input_tokens: int = 11
    output_tokens: int = 7
    error_after: int | None = None
    #: Prompt-cache counts, sent in ``usage`` (``message_start``'s in a stream) when set.
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    def _usage(self, output_tokens: int) -> dict[str, int]:
        usage = {"input_tokens": self.input_tokens, "output_tokens": output_tokens}
        for k in ("cache_creation_input_tokens", "cache_read_input_tokens"):
            if getattr(self, k) is not None:
                usage[k] = getattr(self, k)
        return usage

    def __call__(self, record: RecordedRequest) -> RawResponse | SSEFramingStream:
        problem = check_request(record)
        if problem is not None:
            return problem
        body = record.json()
        if record.bare_path.endswith("/count_tokens"):
            count = len(json.dumps(body.get("messages"))) // 4 + 1
            return _http(200, json.dumps({"input_tokens": count}).encode())
        blocks = [dict(b) for b in (self.content or [{"type": "text", "text": DEFAULT_TEXT}])]
        stop = self.stop_reason or (
            "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        )
        message = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self._usage(self.output_tokens),
        }
        if body.get("stream") is not True:
            return _http(200, json.dumps(message).encode())
        events = self._events(message)
        if self.error_after is not None:
            broken = _event("error", json.loads(error_body("overloaded_error", "Overloaded")))
            events = [*events[: self.error_after], broken]
        return SSEFramingStream(events)

    def _events(self, message: dict[str, Any]) -> list[bytes]:
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": self._usage(1),
        }
        out = [_event("message_start", {"type": "message_start", "message": start})]
        for i, block in enumerate(message["content"]):
            kind = block["type"]
            empty: dict[str, Any] = {"type": kind}
            deltas: list[dict[str, Any]] = []
            if kind == "text":
                empty["text"] = ""
                words = block["text"].split(" ")
                deltas = [
                    {"type": "text_delta", "text": w if j == 0 else " " + w}
                    for j, w in enumerate(words)
                ]
            elif kind == "thinking":
                empty.update(thinking="", signature="")
                deltas = [
                    {"type": "thinking_delta", "thinking": block["thinking"]},
                    {"type": "signature_delta", "signature": block.get("signature", "sig")},
                ]
            elif kind == "tool_use":
                empty.update(id=block["id"], name=block["name"], input={})
                text = json.dumps(block["input"])
                half = len(text) // 2
                deltas = [
                    {"type": "input_json_delta", "partial_json": text[:half]},
                    {"type": "input_json_delta", "partial_json": text[half:]},
                ]
            out.append(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": empty},
                )
            )
            if i == 0:
                out.append(_event("ping", {"type": "ping"}))
            for d in deltas:
                out.append(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": d},
                    )
                )
            out.append(_event("content_block_stop", {"type": "content_block_stop", "index": i}))
        out.append(
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": self.output_tokens},
                },
            )
        )
        out.append(_event("message_stop", {"type": "message_stop"}))
        return out


def check_request(record: RecordedRequest) -> RawResponse | None:
    """Anthropic's own checks of a request: None when it is acceptable."""
    if record.method != "POST" or not record.bare_path.startswith("/v1/messages"):
        return _http(404, error_body("not_found_error", f"Not found: {record.bare_path}"))
    if "anthropic-version" not in record.headers:
        return _http(400, error_body("invalid_request_error", "anthropic-version: header required"))
    try:
        body = record.json()
    except ValueError:
        return _http(400, error_body("invalid_request_error", "invalid JSON body"))
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return _http(400, error_body("invalid_request_error", "model: Field required"))
    counting = record.bare_path.endswith("/count_tokens")
    if not counting and not isinstance(body.get("max_tokens"), int):
        return _http(400, error_body("invalid_request_error", "max_tokens: Field required"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _http(400, error_body("invalid_request_error", "messages: at least one message"))
    for i, m in enumerate(messages):
        want = "user" if i % 2 == 0 else "assistant"
        if not isinstance(m, dict) or m.get("role") != want:
            return _http(
                400,
                error_body(
                    "invalid_request_error",
                    f"messages.{i}.role: roles must alternate between user and assistant",
                ),
            )
    return None


class AnthropicUpstream(FakeUpstream):
    """A fake Anthropic API: answers :class:`AnthropicReply` unless scripted otherwise.

    With ``api_key`` set, a request without that ``x-api-key`` gets a 401
    ``authentication_error``."""

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__(prefix="", default=self._default)
        self.api_key = api_key

    def __enter__(self) -> AnthropicUpstream:
        self.start()
        return self

    def _default(self, record: RecordedRequest) -> RawResponse | SSEFramingStream:
        return AnthropicReply()(record)

    def _next_behaviour(self, record: RecordedRequest) -> Any:
        if self.api_key is not None and record.headers.get("x-api-key") != self.api_key:
            return _http(401, error_body("authentication_error", "invalid x-api-key"))
        return super()._next_behaviour(record)
