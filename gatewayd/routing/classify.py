"""Which upstream failures count as what: retry, fall back, or hand to the client."""

from __future__ import annotations

import re
from enum import Enum

from gatewayd.providers.base import FailureKind, UpstreamFailure

#: HTTP statuses worth another attempt: the upstream, not the request, is at fault.
TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
#: Statuses that mean this deployment is misconfigured; another alias may work.
MISCONFIGURED_STATUSES = frozenset({401, 403, 404})

_CONTEXT_PATTERNS = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many tokens"
    r"|input is too long|reduce the length|exceeds the model'?s? (?:maximum|context)"
    r"|token limit|max_tokens.*too large|context size",
    re.IGNORECASE,
)


class Verdict(Enum):
    """What the router does with a failure."""

    RETRY = "retry"  # transient: another attempt on this alias, then its fallbacks
    FALLBACK = "fallback"  # not retried on this alias, but its fallbacks may work
    CONTEXT_WINDOW = "context_window"  # to context_window_fallbacks, else the client
    CLIENT = "client"  # the request itself is wrong: straight back to the client


def is_context_window_error(f: UpstreamFailure) -> bool:
    """OpenAI's ``context_length_exceeded`` code, or the usual messages of other providers."""
    if f.kind is not FailureKind.HTTP or f.status not in (400, 413, 422):
        return False
    if f.error.get("code") == "context_length_exceeded":
        return True
    return bool(_CONTEXT_PATTERNS.search(f.message))


def classify(f: UpstreamFailure) -> Verdict:
    """The router's verdict on one failed attempt."""
    if f.kind is not FailureKind.HTTP:
        return Verdict.RETRY  # refused, reset, timed out, or a broken 2xx
    if f.status in TRANSIENT_STATUSES:
        return Verdict.RETRY
    if f.status in MISCONFIGURED_STATUSES or 300 <= f.status < 400:
        return Verdict.FALLBACK  # a redirect is a wrong api_base: redirects are not followed
    if is_context_window_error(f):
        return Verdict.CONTEXT_WINDOW
    if f.status >= 500:
        return Verdict.FALLBACK  # a server fault, not worth repeating here
    return Verdict.CLIENT
