"""The Anthropic Messages dialect in front of a chat upstream.

:func:`to_chat` turns a Messages request into a chat request (the inverse of
:func:`gatewayd.dialects.anthropic_chat.to_anthropic`); :func:`from_chat` turns a
``chat.completion`` into an Anthropic ``Message``. Streams: :mod:`messages_stream`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from gatewayd.dialects.anthropic_chat import tool_call
from gatewayd.dialects.errors import TranslationError, untranslatable
from gatewayd.dialects.usage import Spent

#: chat finish_reason -> Anthropic stop_reason.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_EFFORTS = ((2048, "low"), (8192, "medium"))
#: Every other request field has no chat equivalent: refused unless drop_params.
_KNOWN = {
    "model",
    "max_tokens",
    "system",
    "messages",
    "tools",
    "tool_choice",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "thinking",
    "stream",
}
TARGET = "Chat Completions"


def _text(blocks: Any, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise TranslationError(f"{where} must be a string or a list of blocks", where)
    return "".join(
        b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
    )


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise untranslatable(f"{where}.source.type", TARGET)
    return {"type": "image_url", "image_url": {"url": url}}


def _user(content: Any, where: str, drop: bool) -> list[dict[str, Any]]:
    """One user turn: tool results become ``tool`` messages, the rest one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list", where)
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            result = block.get("content", "")
            text = result if isinstance(result, str) else _text(result, f"{at}.content")
            if block.get("is_error"):
                text = f"Error: {text}"
            tools.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
            )
        elif not drop:
            raise untranslatable(f"{at} ({kind})", TARGET)
    out = list(tools)
    if parts:
        simple = all(p["type"] == "text" for p in parts)
        joined: Any = "".join(p["text"] for p in parts) if simple else parts
        out.append({"role": "user", "content": joined})
    return out


def _assistant(content: Any, where: str, drop: bool) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content must be a string or a list", where)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(tool_call(block))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the upstream's own reasoning is not replayed to another model
        elif not drop:
            raise untranslatable(f"{where}.content[{i}] ({kind})", TARGET)
    msg: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tools(tools: Any, drop: bool) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools if isinstance(tools, list) else []):
        if not isinstance(t, dict):
            continue
        if t.get("type") not in (None, "custom") or "input_schema" not in t:
            if drop:
                continue
            raise untranslatable(f"tools[{i}] ({t.get('type') or t.get('name')})", TARGET)
        fn: dict[str, Any] = {"name": t.get("name"), "parameters": t.get("input_schema")}
        if t.get("description"):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise TranslationError(f"unsupported tool_choice type {kind!r}", "tool_choice")


def to_chat(body: dict[str, Any], drop: bool = False) -> dict[str, Any]:
    """The chat request for a Messages request; raises :class:`TranslationError`."""
    for key in body:
        if key not in _KNOWN and body[key] is not None and not drop:
            raise untranslatable(key, TARGET)
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"], "system")})
    turns = body.get("messages")
    if not isinstance(turns, list):
        raise TranslationError("messages: field required (a list)", "messages")
    for i, m in enumerate(turns):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise TranslationError(f"{where} must be an object", "messages")
        if m.get("role") == "user":
            messages += _user(m.get("content"), where, drop)
        elif m.get("role") == "assistant":
            messages.append(_assistant(m.get("content"), where, drop))
        else:
            raise TranslationError(f"{where}.role must be user or assistant", "messages")
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if isinstance(body.get("max_tokens"), int):
        chat["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            chat[key] = body[key]
    stops = body.get("stop_sequences")
    if stops:
        chat["stop"] = [stops] if isinstance(stops, str) else list(stops)
    tools = _tools(body.get("tools"), drop)
    if tools:
        chat["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        if tools or choice.get("type") == "none":
            chat["tool_choice"] = _tool_choice(choice)
        if choice.get("disable_parallel_tool_use") and tools:
            chat["parallel_tool_calls"] = False
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        budget = budget if isinstance(budget, int) else 0
        chat["reasoning_effort"] = next((e for b, e in _EFFORTS if budget <= b), "high")
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def message_id(chat_id: Any) -> str:
    text = str(chat_id or "")
    return text if text.startswith("msg_") else "msg_" + (text or uuid.uuid4().hex)


def usage_of(usage: Any) -> dict[str, Any]:
    """Anthropic ``usage`` for an OpenAI one. OpenAI's ``prompt_tokens`` counts every
    input token; Anthropic's ``input_tokens`` leaves out the cache reads and writes,
    which clients add back: they are taken out here. A cache count the upstream did not
    report stays None."""
    u = usage if isinstance(usage, dict) else {}
    spent = Spent.from_usage(u) or Spent(0, 0)
    details = u.get("prompt_tokens_details")
    reported = details.get("cached_tokens") if isinstance(details, dict) else None
    read = spent.cache_read if spent.cache_read or isinstance(reported, int) else None
    return {
        "input_tokens": spent.prompt - spent.cache_read - spent.cache_write,
        "output_tokens": spent.completion,
        "cache_creation_input_tokens": spent.cache_write or None,
        "cache_read_input_tokens": read,
    }


def from_chat(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An Anthropic ``Message`` for a ``chat.completion``."""
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_" + uuid.uuid4().hex[:24],
                "name": fn.get("name"),
                "input": parse_arguments(fn.get("arguments")),
            }
        )
    reason = STOP_REASONS.get(str(choice.get("finish_reason") or "stop"), "end_turn")
    if reason != "tool_use" and any(b["type"] == "tool_use" for b in content):
        reason = "tool_use"
    return {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": usage_of(chat.get("usage")),
    }


def parse_arguments(arguments: Any) -> dict[str, Any]:
    """A tool call's JSON-encoded arguments as an object (``{}`` when unreadable)."""
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {"value": value}


def estimate_tokens(body: dict[str, Any]) -> int:
    """A rough input token count (4 characters a token) for ``count_tokens`` when the
    upstream has no such endpoint."""
    parts = [body.get("system"), body.get("messages"), body.get("tools")]
    return max(1, len(json.dumps([p for p in parts if p], ensure_ascii=False)) // 4)
