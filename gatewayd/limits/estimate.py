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

from gatewayd.dialects.usage import Spent, event_usage, merge_usage

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


__all__ = ["Estimate", "Spent", "cost", "estimate", "event_usage", "merge_usage"]


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
