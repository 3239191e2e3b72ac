"""Token usage between the dialects, with prompt caching counted the way each one does.

OpenAI (Chat Completions and Responses) counts every input token in ``prompt_tokens``
/ ``input_tokens`` and says how many of them were cache reads in
``prompt_tokens_details.cached_tokens``. Anthropic's ``input_tokens`` are only the
tokens after the last cache breakpoint: cache writes (``cache_creation_input_tokens``)
and cache reads (``cache_read_input_tokens``) are counted beside them, and a client
adds the three. Cache writes have no OpenAI field: they travel as
``prompt_tokens_details.cache_write_tokens`` (the name the Responses dialect reads).
"""

from __future__ import annotations

from typing import Any


def count(value: Any) -> int:
    """A token count from JSON: a non-negative integer, else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def chat_usage_of_anthropic(usage: Any) -> dict[str, Any]:
    """An OpenAI chat ``usage`` for an Anthropic one: ``prompt_tokens`` counts every
    input token (fresh, cache writes and cache reads), ``cached_tokens`` the reads."""
    u = usage if isinstance(usage, dict) else {}
    written = count(u.get("cache_creation_input_tokens"))
    read = count(u.get("cache_read_input_tokens"))
    prompt = count(u.get("input_tokens")) + written + read
    completion = count(u.get("output_tokens"))
    details: dict[str, int] = {"cached_tokens": read}
    if written:
        details["cache_write_tokens"] = written
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
    }


def anthropic_usage_of_chat(usage: Any) -> dict[str, Any]:
    """An Anthropic ``usage`` for an OpenAI chat one: ``input_tokens`` without the cache
    reads and writes, which are given beside it (None when the upstream said nothing)."""
    u = usage if isinstance(usage, dict) else {}
    details = u.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    cached = details.get("cached_tokens")
    written = details.get("cache_write_tokens", u.get("cache_creation_input_tokens"))
    read = count(cached)
    write = count(written)
    return {
        "input_tokens": max(0, count(u.get("prompt_tokens")) - read - write),
        "output_tokens": count(u.get("completion_tokens")),
        "cache_creation_input_tokens": write if isinstance(written, int) else None,
        "cache_read_input_tokens": read if isinstance(cached, int) else None,
    }
