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
_PROMPT_FIELDS = ("messages", "prompt", "input", "system", "instructions", "tools")


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


@dataclass(frozen=True)
class Spent:
    """What a finished request used, from the upstream's ``usage`` object. ``prompt``
    counts every input token; ``cache_read`` and ``cache_write`` are the part of them
    read from or written to a prompt cache (priced apart)."""

    prompt: int
    completion: int
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any] | None) -> Spent | None:
        """OpenAI's ``prompt_tokens``/``completion_tokens`` (with
        ``prompt_tokens_details``), Responses' ``input_tokens``/``output_tokens`` (with
        ``input_tokens_details``) or Anthropic's, whose ``input_tokens`` leave out the
        ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` beside them;
        None when the upstream reported none."""
        if not isinstance(usage, Mapping):
            return None
        p = _count(usage, "prompt_tokens", "input_tokens")
        c = _count(usage, "completion_tokens", "output_tokens")
        if p is None and c is None:
            return None
        details = usage.get("prompt_tokens_details", usage.get("input_tokens_details"))
        if isinstance(details, Mapping):  # OpenAI: the cached tokens are in the count
            read = _count(details, "cached_tokens") or 0
            write = _count(details, "cache_write_tokens") or 0
            return cls(max(p or 0, read + write), c or 0, read, write)
        # Anthropic: the cached tokens are beside the count.
        read = _count(usage, "cache_read_input_tokens") or 0
        write = _count(usage, "cache_creation_input_tokens") or 0
        return cls((p or 0) + read + write, c or 0, read, write)


def _count(usage: Mapping[str, Any], *names: str) -> int | None:
    for k in names:
        v = usage.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            return v
    return None


@dataclass(frozen=True)
class Prices:
    """A deployment's USD per token: input, output, and the input tokens read from or
    written to a prompt cache (LiteLLM's ``cache_read_input_token_cost`` and
    ``cache_creation_input_token_cost``; the input price when not given)."""

    input: float = 0.0
    output: float = 0.0
    cache_read: float | None = None
    cache_write: float | None = None

    def of(self, spent: Spent) -> float:
        """USD for what a request used."""
        read = self.input if self.cache_read is None else self.cache_read
        write = self.input if self.cache_write is None else self.cache_write
        fresh = max(0, spent.prompt - spent.cache_read - spent.cache_write)
        return (
            fresh * self.input
            + spent.cache_read * read
            + spent.cache_write * write
            + spent.completion * self.output
        )


def cost(prompt: int, completion: int, input_price: float, output_price: float) -> float:
    """USD for the tokens at the deployment's per-token prices."""
    return prompt * input_price + completion * output_price
