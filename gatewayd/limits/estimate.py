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
    """What a finished request used, from the upstream's ``usage`` object."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any] | None) -> Spent | None:
        """OpenAI's ``prompt_tokens``/``completion_tokens`` (or Responses' / Anthropic's
        ``input_tokens``/``output_tokens``); None when the upstream reported none."""
        if not isinstance(usage, Mapping):
            return None

        def n(*names: str) -> int | None:
            for k in names:
                v = usage.get(k)
                if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                    return v
            return None

        p = n("prompt_tokens", "input_tokens")
        c = n("completion_tokens", "output_tokens")
        if p is None and c is None:
            return None
        return cls(p or 0, c or 0)


def cost(prompt: int, completion: int, input_price: float, output_price: float) -> float:
    """USD for the tokens at the deployment's per-token prices."""
    return prompt * input_price + completion * output_price
