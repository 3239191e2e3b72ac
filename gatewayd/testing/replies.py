"""Scripted answers beyond plain text for :class:`~gatewayd.testing.upstream.FakeUpstream`:
chat completions with tool calls or reasoning (JSON and streamed), and native OpenAI
Responses API answers (``POST {prefix}/responses``).

Each function returns a behaviour to :meth:`FakeUpstream.enqueue`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from gatewayd.testing.behaviours import RawResponse, RecordedRequest, SSEFramingStream


def json_reply(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> RawResponse:
    """A JSON response with a Content-Length (the connection stays open)."""
    body = json.dumps(obj).encode()
    head = [
        f"HTTP/1.1 {status} OK",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return RawResponse(("\r\n".join(head) + "\r\n\r\n").encode() + body, close=False)


def _calls(calls: Sequence[tuple[str, str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for cid, name, args in calls
    ]


def _usage(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def chat_completion(
    content: str | None = None,
    calls: Sequence[tuple[str, str, dict[str, Any]]] = (),
    reasoning: str | None = None,
    finish_reason: str | None = None,
    prompt_tokens: int = 9,
    completion_tokens: int = 5,
    cached_tokens: int | None = None,
) -> dict[str, Any]:
    """A ``chat.completion`` object; ``calls`` are ``(id, name, arguments)``;
    ``cached_tokens`` (of ``prompt_tokens``) in ``prompt_tokens_details`` when set."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = _calls(calls)
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "up-model",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": _usage(prompt_tokens, completion_tokens, cached_tokens),
    }


def chat_reply(**kw: Any) -> RawResponse:
    """:func:`chat_completion` as a JSON answer."""
    return json_reply(chat_completion(**kw))


def chat_stream(
    content: str | None = None,
    calls: Sequence[tuple[str, str, dict[str, Any]]] = (),
    reasoning: str | None = None,
    prompt_tokens: int = 9,
    completion_tokens: int = 5,
    done: bool = True,
    cached_tokens: int | None = None,
) -> SSEFramingStream:
    """The same as a ``chat.completion.chunk`` stream: role, reasoning, content by word,
    tool calls in two argument pieces each, finish, usage, ``[DONE]``."""
    base = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "up-model",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    if reasoning:
        events += [chunk({"reasoning_content": w + " "}) for w in reasoning.split()]
    if content:
        words = content.split(" ")
        events += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    for i, (cid, name, args) in enumerate(calls):
        text = json.dumps(args)
        head = {
            "index": i,
            "id": cid,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        events.append(chunk({"tool_calls": [head]}))
        for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}))
    events.append(chunk({}, "tool_calls" if calls else "stop"))
    usage = _usage(prompt_tokens, completion_tokens, cached_tokens)
    events.append(
        b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"
    )
    if done:
        events.append(b"data: [DONE]\n\n")
    return SSEFramingStream(events)


def native_response(record: RecordedRequest, text: str = "Native hello") -> dict[str, Any]:
    """What OpenAI's ``POST /responses`` answers to the recorded request."""
    body = record.json()
    return {
        "id": "resp_native_" + uuid.uuid4().hex[:16],
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": None,
        "model": body.get("model"),
        "output": [
            {
                "id": "msg_native_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 5,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 2,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 7,
        },
        "user": None,
        "metadata": {},
        "x_native_extra": {"kept": True},
    }


def responses_reply(text: str = "Native hello") -> Any:
    """A behaviour answering ``POST /responses`` natively (JSON or streamed)."""

    def answer(record: RecordedRequest) -> RawResponse | SSEFramingStream:
        response = native_response(record, text)
        if record.json().get("stream") is not True:
            return json_reply(response)
        seq = iter(range(1000))
        item = response["output"][0]

        def ev(kind: str, **fields: Any) -> bytes:
            payload = {"type": kind, "sequence_number": next(seq), **fields}
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

        start = {**response, "status": "in_progress", "output": [], "usage": None}
        return SSEFramingStream(
            [
                ev("response.created", response=start),
                ev("response.output_item.added", output_index=0, item={**item, "content": []}),
                ev(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=0,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                ),
                ev("response.output_item.done", output_index=0, item=item),
                ev("response.completed", response=response),
            ]
        )

    return answer
