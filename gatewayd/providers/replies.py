"""Reading an upstream's answer headers and error bodies: the OpenAI error type for a
status, the wait a ``Retry-After`` asks for, the headers passed to the client, and the
OpenAI error object made from whatever an upstream sent with an error status."""

from __future__ import annotations

import email.utils
import json
import math
import time
from typing import Any

from twisted.web.http_headers import Headers

from gatewayd.providers.base import openai_error
from gatewayd.upstream.wirejson import loads_strict

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    return _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def retry_after_seconds(headers: Headers, now: float | None = None) -> float | None:
    """The wait an upstream asked for: ``retry-after-ms``, or ``Retry-After`` in seconds
    or as an HTTP date. None when absent or unreadable."""
    ms = headers.getRawHeaders(b"retry-after-ms")
    if ms:
        try:
            millis = float(ms[0])
        except ValueError:
            millis = math.nan
        if math.isfinite(millis):
            return max(0.0, millis / 1000.0)
    ra = headers.getRawHeaders(b"retry-after")
    if not ra:
        return None
    value = ra[0].decode("latin-1").strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_PASS_HEADER_PREFIXES = (b"x-", b"openai-")
#: Hop and infrastructure headers that say nothing about the answer.
_DROP_HEADER_PREFIXES = (b"x-gatewayd-", b"x-forwarded-", b"x-powered-by", b"x-real-ip")


def passable_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Upstream response headers worth showing the client (request ids, rate limits)."""
    out: list[tuple[bytes, bytes]] = []
    for name, values in headers.getAllRawHeaders():
        low = name.lower()
        if low.startswith(_PASS_HEADER_PREFIXES) and not low.startswith(_DROP_HEADER_PREFIXES):
            out.extend((low, v) for v in values)
    return out


def error_object(status: int, body: bytes) -> dict[str, Any]:
    """OpenAI's error object from whatever an upstream sent with an error status.

    An upstream's own ``error`` object passes through whole (extra fields kept).
    """
    parsed: Any = None
    try:
        parsed = loads_strict(body) if body else None
    except ValueError:  # also NaN/Infinity and too-deep nesting: read as text
        parsed = None
    err_type = error_type_for(status)
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        if isinstance(inner, dict):
            out = dict(inner)
            out.setdefault("message", "")
            out.setdefault("type", err_type)
            out.setdefault("param", None)
            out.setdefault("code", None)
            return out
        if isinstance(inner, str):  # Ollama, llama.cpp and others
            return openai_error(inner, err_type)
        if "detail" in parsed:  # FastAPI servers (vLLM)
            detail = parsed["detail"]
            text = detail if isinstance(detail, str) else json.dumps(detail, allow_nan=False)
            return openai_error(text, err_type)
        if isinstance(parsed.get("message"), str):
            return openai_error(parsed["message"], err_type)
    text = body[:300].decode("utf-8", "replace").strip()
    message = f"upstream returned HTTP {status}" + (f": {text}" if text else "")
    return openai_error(message, err_type)
