"""How many tokens a request will use, before it is sent: what a limit reserves.

A character count is cheap and provider-neutral: about four characters a token for
the prompt, plus the completion the client asked for at most (``max_tokens`` and its
newer spellings) or a default. The real usage settles the reservation afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Completion tokens reserved when the request names no maximum.
DEFAULT_COMPLETION_TOKENS = 1024
#: The most completion tokens one request reserves, whatever its ``max_tokens`` and
#: ``n`` say (``1e23`` is valid JSON): past 2**53 the counters' float sums lose the
#: tokens already counted, and Redis keeps 14 significant digits. No model answers more.
MAX_COMPLETION_TOKENS = 10**9
_CHARS_PER_TOKEN = 4
_MAX_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
#: Everything the model reads as input: the messages, and the tool and output schemas
#: (``functions`` is Chat's older spelling of ``tools``; ``response_format`` and
#: Responses' ``text.format`` carry a JSON schema the provider adds to the prompt).
_PROMPT_FIELDS = (
    "messages",
    "prompt",
    "input",
    "system",
    "instructions",
    "tools",
    "functions",
    "response_format",
    "text",
)


@dataclass(frozen=True)
class Estimate:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


def estimate(
    body: Mapping[str, Any], default_completion: int = DEFAULT_COMPLETION_TOKENS
) -> Estimate:
    """The reservation for one request body (any dialect)."""
    prompt = math.ceil(sum(_chars(body.get(f)) for f in _PROMPT_FIELDS) / _CHARS_PER_TOKEN)
    completion = default_completion
    for f in _MAX_FIELDS:
        v = body.get(f)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            completion = v
            break
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        completion *= n
    return Estimate(max(1, prompt), min(completion, MAX_COMPLETION_TOKENS))


def _count(usage: Mapping[str, Any], *names: str) -> int | None:
    """The first of ``names`` that holds a token count (a non-negative int)."""
    for k in names:
        v = usage.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


def _details(usage: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    d = usage.get(name)
    return d if isinstance(d, Mapping) else {}


@dataclass(frozen=True)
class Spent:
    """What a finished request used, from the upstream's ``usage`` object.

    ``prompt`` counts every input token, those read from or written to the provider's
    prompt cache included (what limits count); ``cache_read`` and ``cache_write`` are the
    parts of it priced at the cache prices."""

    prompt: int
    completion: int
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any] | None) -> Spent | None:
        """From any dialect's usage; None when the upstream reported none.

        OpenAI Chat (``prompt_tokens`` counts every input token,
        ``prompt_tokens_details.cached_tokens`` the cache reads), Responses
        (``input_tokens`` with ``input_tokens_details``: the same meaning) and Anthropic
        (``input_tokens`` excludes ``cache_read_input_tokens`` and
        ``cache_creation_input_tokens``: they are added)."""
        if not isinstance(usage, Mapping):
            return None
        c = _count(usage, "completion_tokens", "output_tokens")
        p = _count(usage, "prompt_tokens")
        if p is not None:  # OpenAI Chat (LiteLLM adds Anthropic's names at the top level)
            det = _details(usage, "prompt_tokens_details")
            read = _count(det, "cached_tokens") or _count(usage, "cache_read_input_tokens") or 0
            write = (
                _count(det, "cache_write_tokens", "cache_creation_tokens")
                or _count(usage, "cache_creation_input_tokens")
                or 0
            )
            return cls(p, c or 0, min(read, p), min(write, max(0, p - read)))
        p = _count(usage, "input_tokens")
        if "input_tokens_details" in usage:  # Responses: input_tokens counts them all
            det = _details(usage, "input_tokens_details")
            read = _count(det, "cached_tokens") or 0
            write = _count(det, "cache_write_tokens") or 0
            p = p or 0
            return cls(p, c or 0, min(read, p), min(write, max(0, p - read)))
        read = _count(usage, "cache_read_input_tokens") or 0
        write = _count(usage, "cache_creation_input_tokens") or 0
        if p is None and c is None and not (read or write):
            return None
        return cls((p or 0) + read + write, c or 0, read, write)


def event_usage(obj: Any) -> dict[str, Any] | None:
    """The usage one stream event carries: at the top (a Chat chunk, Anthropic's
    ``message_delta``), in ``message`` (Anthropic's ``message_start``) or in
    ``response`` (Responses' ``response.completed``)."""
    if not isinstance(obj, dict):
        return None
    for holder in (obj, obj.get("message"), obj.get("response")):
        if isinstance(holder, dict) and isinstance(holder.get("usage"), dict):
            usage: dict[str, Any] = holder["usage"]
            return usage
    return None


def merge_usage(before: dict[str, Any] | None, usage: Mapping[str, Any]) -> dict[str, Any]:
    """A stream's usage so far with one more event's: Anthropic's counts come in two
    events (input and cache counts in ``message_start``, output in ``message_delta``);
    the later non-null value wins."""
    merged = dict(before or {})
    merged.update((k, v) for k, v in usage.items() if v is not None)
    return merged


def cost(
    prompt: int,
    completion: int,
    input_price: float,
    output_price: float,
    cache_read: int = 0,
    cache_write: int = 0,
    cache_read_price: float | None = None,
    cache_write_price: float | None = None,
) -> float:
    """USD for the tokens at the deployment's per-token prices. ``cache_read`` and
    ``cache_write`` are parts of ``prompt``, priced at their own prices when the
    deployment sets them, else at the input price."""
    read_price = input_price if cache_read_price is None else cache_read_price
    write_price = input_price if cache_write_price is None else cache_write_price
    plain = max(0, prompt - cache_read - cache_write)
    return (
        plain * input_price
        + cache_read * read_price
        + cache_write * write_price
        + completion * output_price
    )
