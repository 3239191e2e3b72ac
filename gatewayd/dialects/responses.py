"""The OpenAI Responses dialect in front of a chat upstream.

:func:`to_chat` turns a Responses request (its ``input`` already expanded with what
``previous_response_id`` referred to) into a chat request; :func:`from_chat` turns a
``chat.completion`` into a ``Response`` object. Streams: :mod:`responses_stream`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from gatewayd.dialects.errors import TranslationError, untranslatable

TARGET = "Chat Completions"
#: Fields read by the translation.
_TRANSLATED = {
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "user",
    "safety_identifier",
    "stream",
    "service_tier",
    "prompt_cache_key",
}
#: Fields the gateway itself handles, or hints with nothing to do on a chat upstream.
_GATEWAY = {"store", "metadata", "previous_response_id", "stream_options", "truncation"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _content(parts: Any, where: str, drop: bool) -> Any:
    """Chat content for Responses content (a string, or input/output parts)."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise TranslationError(f"{where}.content must be a string or a list", where)
    out: list[dict[str, Any]] = []
    for i, p in enumerate(parts):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text"):
            out.append({"type": "text", "text": p.get("text", "")})
        elif kind == "refusal":
            out.append({"type": "text", "text": p.get("refusal", "")})
        elif kind == "input_image" and isinstance(p.get("image_url"), str):
            image: dict[str, Any] = {"url": p["image_url"]}
            if p.get("detail") in ("low", "high", "auto"):
                image["detail"] = p["detail"]
            out.append({"type": "image_url", "image_url": image})
        elif not drop:
            raise untranslatable(f"{where}.content[{i}] ({kind})", TARGET)
    if all(p["type"] == "text" for p in out):
        return "".join(p["text"] for p in out)
    return out


def input_messages(items: Any, drop: bool) -> list[dict[str, Any]]:
    """Chat messages for Responses input items."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    if not isinstance(items, list):
        raise TranslationError("input must be a string or a list of items", "input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"{where} must be an object", "input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise TranslationError(f"{where}.role {role!r} is not a message role", "input")
            content = _content(item.get("content"), where, drop)
            last = out[-1] if out else None
            if (
                role == "assistant"
                and last
                and last["role"] == "assistant"
                and not last.get("content")
            ):
                last["content"] = content  # a call and its text arrive as separate items
            else:
                out.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif last and last["role"] == "assistant":
                last["tool_calls"] = [call]
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            if not isinstance(output, str):
                output = _content(output, where, drop)
                output = output if isinstance(output, str) else ""
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": output})
        elif kind == "reasoning":
            # Replayed only with Anthropic's signature (in encrypted_content), which a
            # Claude upstream needs to see its thinking again; else not replayed.
            signature = item.get("encrypted_content")
            if isinstance(signature, str) and signature:
                parts = item.get("content") or []
                text = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
                out.append(
                    {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": text,
                        "thinking_signature": signature,
                    }
                )
        elif not drop:
            raise untranslatable(f"{where} ({kind})", TARGET)
    # A replayed reasoning with nothing after it in its turn is no message.
    return [m for m in out if m["role"] != "assistant" or m.get("content") or m.get("tool_calls")]


def _tools(tools: Any, drop: bool) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools if isinstance(tools, list) else []):
        if not isinstance(t, dict) or t.get("type") != "function":
            if drop:
                continue
            kind = t.get("type") if isinstance(t, dict) else t
            raise untranslatable(f"tools[{i}] ({kind})", TARGET)
        fn: dict[str, Any] = {"name": t.get("name"), "parameters": t.get("parameters") or {}}
        if t.get("description"):
            fn["description"] = t["description"]
        if t.get("strict") is not None:
            fn["strict"] = t["strict"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any, drop: bool) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if drop:
        return None
    raise untranslatable("tool_choice", TARGET)


def _response_format(text: Any, drop: bool) -> dict[str, Any] | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": spec}
    if drop:
        return None
    raise untranslatable("text.format", TARGET)


def to_chat(body: dict[str, Any], drop: bool = False) -> dict[str, Any]:
    """The chat request for a Responses request; raises :class:`TranslationError`."""
    for key, value in body.items():
        if key in _TRANSLATED or key in _GATEWAY or value is None or drop:
            continue
        if key == "include" and not value:
            continue
        if key == "background" and value is False:
            continue
        raise untranslatable(key, TARGET)
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str) and body["instructions"]:
        messages.append({"role": "system", "content": body["instructions"]})
    if body.get("input") is None:
        raise TranslationError("input: field required", "input")
    messages += input_messages(body.get("input"), drop)
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if isinstance(body.get("max_output_tokens"), int):
        chat["max_tokens"] = body["max_output_tokens"]
    for key in ("temperature", "top_p", "parallel_tool_calls", "service_tier", "prompt_cache_key"):
        if body.get(key) is not None:
            chat[key] = body[key]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str):
        chat["user"] = user
    tools = _tools(body.get("tools"), drop)
    if tools:
        chat["tools"] = tools
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"], drop)
        if choice is not None and (tools or choice == "none"):
            chat["tool_choice"] = choice
    fmt = _response_format(body.get("text"), drop)
    if fmt is not None:
        chat["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


# -- the Response object --------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def usage_of(usage: Any) -> dict[str, Any]:
    """Responses ``usage`` for an OpenAI chat one."""
    u = usage if isinstance(usage, dict) else {}
    inp = int(u.get("prompt_tokens") or 0)
    outp = int(u.get("completion_tokens") or 0)
    pdet = _dict(u.get("prompt_tokens_details"))
    cdet = _dict(u.get("completion_tokens_details"))
    return {
        "input_tokens": inp,
        "input_tokens_details": {
            "cached_tokens": int(pdet.get("cached_tokens") or 0),
            "cache_write_tokens": int(pdet.get("cache_write_tokens") or 0),
        },
        "output_tokens": outp,
        "output_tokens_details": {"reasoning_tokens": int(cdet.get("reasoning_tokens") or 0)},
        "total_tokens": int(u.get("total_tokens") or inp + outp),
    }


def skeleton(body: dict[str, Any], response_id: str, model: str) -> dict[str, Any]:
    """A ``Response`` in progress: the request's settings echoed, no output yet."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature"),
        "text": text,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation", "disabled"),
        "usage": None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def message_item(text: str, item_id: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id or new_id("msg"),
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def call_item(
    call_id: str, name: str, arguments: str, item_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": item_id or new_id("fc"),
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(text: str, item_id: str | None = None, signature: Any = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id or new_id("rs"),
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }
    if isinstance(signature, str) and signature:
        item["encrypted_content"] = signature  # Anthropic's thinking signature
    return item


def finish(response: dict[str, Any], finish_reason: str | None, usage: Any) -> dict[str, Any]:
    """Mark ``response`` done: completed, or incomplete when the token limit cut it."""
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"
    response["usage"] = usage_of(usage)
    return response


def from_chat(
    chat: dict[str, Any], body: dict[str, Any], response_id: str, model: str
) -> dict[str, Any]:
    """The ``Response`` for a ``chat.completion`` answering ``body``."""
    response = skeleton(body, response_id, model)
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    msg = choice.get("message") or {}
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        response["output"].append(
            reasoning_item(reasoning, signature=msg.get("thinking_signature"))
        )
    text = msg.get("content")
    if isinstance(text, str) and text:
        response["output"].append(message_item(text))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        response["output"].append(
            call_item(
                str(call.get("id") or new_id("call")),
                str(fn.get("name") or ""),
                str(fn.get("arguments") or ""),
            )
        )
    return finish(response, choice.get("finish_reason"), chat.get("usage"))


def output_text(response: dict[str, Any]) -> str:
    """All ``output_text`` of a response, joined (the SDK's ``output_text``)."""
    return "".join(
        part.get("text", "")
        for item in response.get("output") or []
        if item.get("type") == "message"
        for part in item.get("content") or []
        if part.get("type") == "output_text"
    )


def listed_items(items: list[Any], response_id: str) -> list[dict[str, Any]]:
    """Input items as ``GET /responses/{id}/input_items`` lists them: each with an id
    (stable for the response), message content as typed parts."""
    out: list[dict[str, Any]] = []
    tag = response_id.removeprefix("resp_")
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            continue
        item = dict(raw)
        kind = item.setdefault("type", "message")
        if kind == "message":
            item.setdefault("id", f"msg_{tag}_{i}")
            item.setdefault("status", "completed")
            content = item.get("content")
            assistant = item.get("role") == "assistant"
            if isinstance(content, str):
                part: dict[str, Any] = (
                    {"type": "output_text", "text": content, "annotations": []}
                    if assistant
                    else {"type": "input_text", "text": content}
                )
                item["content"] = [part]
        elif kind == "function_call":
            item.setdefault("id", f"fc_{tag}_{i}")
            item.setdefault("status", "completed")
        elif kind == "function_call_output":
            item.setdefault("id", f"fco_{tag}_{i}")
            item.setdefault("status", "completed")
        else:
            item.setdefault("id", f"item_{tag}_{i}")
        out.append(item)
    return out
