"""Token counts from any dialect's ``usage`` object, and from a stream's events.

Each dialect counts input tokens its own way: OpenAI Chat's ``prompt_tokens`` and
Responses' ``input_tokens`` count every input token, prompt-cache reads included
(``*_tokens_details.cached_tokens``); Anthropic's ``input_tokens`` leaves out
``cache_read_input_tokens`` and ``cache_creation_input_tokens``. :class:`Spent` is
one meaning for all: what limits count, spend prices and translations report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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
