"""An answer in the other shape: the JSON body a recorded stream adds up to (a JSON
hit of a streamed answer), and the chat stream a JSON answer replays as (a streamed
hit of a JSON answer).

Streams of every dialect are assembled: chat and completions chunks (content,
reasoning, tool-call deltas, usage), Anthropic Messages events, and the Responses
API's ``response.completed``. A JSON answer is replayed as a stream only in chat
(and completions) shape; a native Messages or Responses body is not (a miss).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gatewayd.dialects import Dialect
from gatewayd.upstream.sse import DONE, SSEFramer, data_event, event_data


def _objects(events: tuple[bytes, ...]) -> Iterator[dict[str, Any]]:
    framer = SSEFramer()
    for block in events:
        for event in framer.feed(block):
            raw = event_data(event)
            if raw is None or raw.strip() == b"[DONE]":
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def _chat_json(events: tuple[bytes, ...]) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    calls: dict[int, dict[int, dict[str, Any]]] = {}
    text_completion = False
    for obj in _objects(events):
        for k in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if k in obj and k not in out:
                out[k] = obj[k]
        if obj.get("object") == "text_completion":
            text_completion = True
        if isinstance(obj.get("usage"), dict):
            out["usage"] = obj["usage"]
        for c in obj.get("choices") or ():
            if not isinstance(c, dict):
                continue
            i = int(c.get("index") or 0)
            choice = choices.setdefault(i, {"index": i, "finish_reason": None})
            if c.get("finish_reason") is not None:
                choice["finish_reason"] = c["finish_reason"]
            if "text" in c:  # a completions chunk
                choice["text"] = choice.get("text", "") + (c.get("text") or "")
                continue
            delta = c.get("delta") or {}
            message = choice.setdefault("message", {"role": "assistant", "content": None})
            if delta.get("role"):
                message["role"] = delta["role"]
            for field in ("content", "reasoning_content", "reasoning", "refusal"):
                if isinstance(delta.get(field), str):
                    message[field] = (message.get(field) or "") + delta[field]
            for tc in delta.get("tool_calls") or ():
                slot = calls.setdefault(i, {}).setdefault(
                    int(tc.get("index") or 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                if tc.get("type"):
                    slot["type"] = tc["type"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    slot["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    slot["function"]["arguments"] += fn["arguments"]
    if not choices and "id" not in out:
        return None
    for i, by_index in calls.items():
        choices[i]["message"]["tool_calls"] = [by_index[j] for j in sorted(by_index)]
    out["object"] = "text_completion" if text_completion else "chat.completion"
    out["choices"] = [choices[i] for i in sorted(choices)]
    return out


def _messages_json(events: tuple[bytes, ...]) -> dict[str, Any] | None:
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    for obj in _objects(events):
        kind = obj.get("type")
        if kind == "message_start" and isinstance(obj.get("message"), dict):
            message = dict(obj["message"])
        elif kind == "content_block_start":
            blocks[int(obj.get("index") or 0)] = dict(obj.get("content_block") or {})
        elif kind == "content_block_delta":
            i = int(obj.get("index") or 0)
            block = blocks.setdefault(i, {})
            d = obj.get("delta") or {}
            t = d.get("type")
            if t == "text_delta":
                block["text"] = block.get("text", "") + (d.get("text") or "")
            elif t == "input_json_delta":
                partial[i] = partial.get(i, "") + (d.get("partial_json") or "")
            elif t == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + (d.get("thinking") or "")
            elif t == "signature_delta":
                block["signature"] = d.get("signature")
            elif t == "citations_delta":
                block.setdefault("citations", []).append(d.get("citation"))
        elif kind == "message_delta" and message is not None:
            for k, v in (obj.get("delta") or {}).items():
                message[k] = v
            if isinstance(obj.get("usage"), dict):
                message["usage"] = {**(message.get("usage") or {}), **obj["usage"]}
    if message is None:
        return None
    for i, text in partial.items():
        try:
            blocks[i]["input"] = json.loads(text) if text else {}
        except ValueError:
            return None
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


def _responses_json(events: tuple[bytes, ...]) -> dict[str, Any] | None:
    for obj in _objects(events):
        if obj.get("type") == "response.completed" and isinstance(obj.get("response"), dict):
            done: dict[str, Any] = obj["response"]
            return done
    return None


def json_of_stream(dialect: Dialect, events: tuple[bytes, ...]) -> bytes | None:
    """The JSON body ``events`` (in ``dialect``) add up to; None if they do not."""
    if dialect is Dialect.MESSAGES:
        out = _messages_json(events)
    elif dialect is Dialect.RESPONSES:
        out = _responses_json(events)
    else:
        out = _chat_json(events)
    return None if out is None else json.dumps(out, separators=(",", ":")).encode()


def stream_of_json(dialect: Dialect, body: bytes) -> tuple[bytes, ...] | None:
    """A chat (or completions) JSON answer as the stream that adds up to it: a chunk
    with each choice's content and tool calls, one with the finish reasons, one with
    the usage, then ``[DONE]``. None for other dialects or a body it cannot read."""
    if dialect is not Dialect.CHAT:
        return None
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        return None
    text = obj.get("object") == "text_completion"
    head = {k: obj[k] for k in ("id", "created", "model", "system_fingerprint") if k in obj}
    head["object"] = "text_completion" if text else "chat.completion.chunk"
    content: list[dict[str, Any]] = []
    finish: list[dict[str, Any]] = []
    for c in obj["choices"]:
        if not isinstance(c, dict):
            return None
        i = c.get("index", 0)
        if text:
            content.append({"index": i, "text": c.get("text") or "", "finish_reason": None})
            finish.append({"index": i, "text": "", "finish_reason": c.get("finish_reason")})
            continue
        message = c.get("message") or {}
        delta: dict[str, Any] = {"role": message.get("role") or "assistant"}
        for field in ("content", "reasoning_content", "reasoning", "refusal"):
            if message.get(field) is not None:
                delta[field] = message[field]
        if message.get("tool_calls"):
            delta["tool_calls"] = [
                {"index": j, **call} for j, call in enumerate(message["tool_calls"])
            ]
        content.append({"index": i, "delta": delta, "finish_reason": None})
        finish.append({"index": i, "delta": {}, "finish_reason": c.get("finish_reason")})
    out = [data_event({**head, "choices": content}), data_event({**head, "choices": finish})]
    if isinstance(obj.get("usage"), dict):
        out.append(data_event({**head, "choices": [], "usage": obj["usage"]}))
    out.append(DONE)
    return tuple(out)
