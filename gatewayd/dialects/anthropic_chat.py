"""Chat Completions <-> Anthropic Messages: the ``anthropic/`` provider's translation.

Chat requests become Messages requests (:func:`to_anthropic`); Anthropic messages and
stream events come back as ``chat.completion`` objects (:func:`to_openai`) and
``chat.completion.chunk`` events (:mod:`~gatewayd.dialects.anthropic_stream`). Structured output
(``response_format``) becomes a forced tool whose input is the answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from gatewayd.dialects.errors import TranslationError, untranslatable

#: Anthropic requires max_tokens; OpenAI clients often leave it out.
DEFAULT_MAX_TOKENS = 4096
#: reasoning_effort -> an extended-thinking budget.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
#: Chat fields with no Messages equivalent: refused unless drop_params.
_REFUSED = ("logprobs", "top_logprobs", "audio", "prediction", "web_search_options", "logit_bias")


def tool_call(block: dict[str, Any]) -> dict[str, Any]:
    """Chat's tool call for an Anthropic ``tool_use`` content block."""
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {
            "name": block.get("name"),
            "arguments": json.dumps(block.get("input") or {}),
        },
    }


def _error(message: str, param: str | None = None) -> TranslationError:
    return TranslationError(message, param)


# -- request ---------------------------------------------------------------------


def text_of(content: Any) -> str:
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
        raise _error("image_url.url must be a string", "messages")
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
    raise _error(f"unsupported tool_choice {choice!r}", "tool_choice")


def structured_tool(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The forced tool (name, input schema) standing in for ``response_format``, if any."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        spec: dict[str, Any] = fmt.get("json_schema") or {}
        name = spec.get("name") if isinstance(spec.get("name"), str) else None
        schema: dict[str, Any] = spec.get("schema") or {}
        return name or "json_output", {"type": "object", **schema}
    if fmt.get("type") == "json_object":
        return "json_output", {"type": "object"}
    return None


def _messages(messages: Any) -> tuple[list[str], list[dict[str, Any]]]:
    if not isinstance(messages, list):
        raise _error("messages must be a list", "messages")
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
            raise _error("each message must be an object", "messages")
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(text_of(m.get("content")))
        elif role == "user":
            add("user", _blocks(m.get("content")))
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if isinstance(m.get("reasoning_content"), str) and m.get("thinking_signature"):
                blocks.append(
                    {
                        "type": "thinking",
                        "thinking": m["reasoning_content"],
                        "signature": m["thinking_signature"],
                    }
                )
            blocks += _blocks(m.get("content"))
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
                        "content": text_of(m.get("content")),
                    }
                ],
            )
        else:
            raise _error(f"unsupported message role {role!r}", "messages")
    return system, out


def to_anthropic(body: dict[str, Any], model: str, drop_params: bool = False) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat request; raises :class:`TranslationError`."""
    system, out = _messages(body.get("messages"))
    req: dict[str, Any] = {"model": model, "messages": out}
    if system:
        req["system"] = "\n\n".join(system)
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    req["max_tokens"] = max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS
    n = body.get("n")
    if isinstance(n, int) and n > 1 and not drop_params:
        raise untranslatable("n", "Anthropic answers one choice")
    for key in _REFUSED:
        if body.get(key) not in (None, False) and not drop_params:
            raise untranslatable(key, "Anthropic Messages")
    stop = body.get("stop")
    if stop is not None:
        req["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            req[key] = body[key]
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in THINKING_BUDGETS:
        budget = THINKING_BUDGETS[effort]
        req["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if req["max_tokens"] <= budget:
            req["max_tokens"] = budget + DEFAULT_MAX_TOKENS
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
    forced = structured_tool(body)
    if forced is not None:
        name, schema = forced
        req.setdefault("tools", []).append(
            {"name": name, "description": "Answer with this tool.", "input_schema": schema}
        )
        choice = {"type": "tool", "name": name}
        req.pop("thinking", None)  # Anthropic refuses a forced tool with thinking on
    if choice is not None:
        req["tool_choice"] = choice
    if isinstance(body.get("user"), str):
        req["metadata"] = {"user_id": body["user"]}
    if body.get("stream"):
        req["stream"] = True
    return req


# -- response --------------------------------------------------------------------


def _tokens(usage: Mapping[str, Any], name: str) -> int:
    v = usage.get(name)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0


def chat_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI ``usage`` for an Anthropic one. Anthropic's ``input_tokens`` leaves out
    the tokens read from (``cache_read_input_tokens``) and written to
    (``cache_creation_input_tokens``) the prompt cache; OpenAI's ``prompt_tokens`` counts
    every input token, with the reads again as ``prompt_tokens_details.cached_tokens``
    (and the writes as ``cache_write_tokens``, the name Responses' details use)."""
    read = _tokens(usage, "cache_read_input_tokens")
    write = _tokens(usage, "cache_creation_input_tokens")
    prompt = _tokens(usage, "input_tokens") + read + write
    completion = _tokens(usage, "output_tokens")
    details: dict[str, int] = {"cached_tokens": read}
    if write:
        details["cache_write_tokens"] = write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    }


def to_openai(msg: dict[str, Any], forced_tool: str | None = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for an Anthropic message.

    ``forced_tool`` names the tool standing in for structured output: its input is the
    answer's text."""
    texts: list[str] = []
    reasoning: list[str] = []
    signature = ""
    calls: list[dict[str, Any]] = []
    structured = False
    for block in msg.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "thinking":
            reasoning.append(block.get("thinking", ""))
            signature = block.get("signature") or signature
        elif kind == "tool_use" and forced_tool is not None and block.get("name") == forced_tool:
            texts = [json.dumps(block.get("input") or {})]
            structured = True
        elif kind == "tool_use":
            calls.append(tool_call(block))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
        if signature:
            message["thinking_signature"] = signature
    usage = msg.get("usage") or {}
    finish = STOP_REASONS.get(msg.get("stop_reason") or "", "stop")
    if structured and finish == "tool_calls":
        finish = "stop"
    return {
        "id": msg.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": msg.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": chat_usage(usage if isinstance(usage, Mapping) else {}),
    }
