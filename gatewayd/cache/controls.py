"""A request's own cache controls: the ``Cache-Control`` header (``no-cache``,
``no-store``, ``max-age=N``) and LiteLLM's body field ``cache: {"no-cache": true,
"no-store": true, "ttl": N, "s-maxage": N, "namespace": "..."}`` (stripped before the
request goes upstream)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gatewayd.routing import RouteError
from gatewayd.upstream.outcomes import openai_error

#: The keys LiteLLM's body field may hold.
BODY_KEYS = frozenset({"no-cache", "no-store", "ttl", "s-maxage", "namespace", "use-cache"})


@dataclass(frozen=True)
class Controls:
    #: Answer from the cache (``no-cache`` turns it off).
    read: bool = True
    #: Store the answer (``no-store`` turns it off).
    write: bool = True
    #: Only entries at most this many seconds old.
    max_age: float | None = None
    #: This answer's ttl instead of the configured one.
    ttl: float | None = None
    #: A namespace of the request's own (its entries apart from everyone else's).
    namespace: str = ""


#: No controls at all (the common request).
NONE = Controls()


def _bad(message: str) -> RouteError:
    return RouteError(400, openai_error(message, "invalid_request_error", None, "cache"), 0)


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"cache.{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise _bad(f"cache.{name} must be a number of seconds, at least 0")
    return float(value)


def _header(value: str) -> tuple[bool, bool, float | None]:
    read, write, max_age = True, True, None
    for part in value.split(","):
        directive = part.strip().lower()
        if directive == "no-cache":
            read = False
        elif directive == "no-store":
            write = False
        elif directive.startswith("max-age="):
            try:
                max_age = max(0.0, float(int(directive[8:].strip().strip('"'))))
            except ValueError:
                raise _bad(f"Cache-Control: {part.strip()!r}: max-age must be an integer") from None
    return read, write, max_age


def parse_controls(header: bytes | str | None, body_field: Any) -> Controls:
    """The request's controls; raises :class:`RouteError` (400) for malformed ones."""
    if header is None and body_field is None:
        return NONE
    read, write, max_age, ttl, namespace = True, True, None, None, ""
    if header is not None:
        text = header.decode("latin-1") if isinstance(header, bytes) else header
        read, write, max_age = _header(text)
    if body_field is not None:
        if not isinstance(body_field, dict):
            raise _bad(f'cache must be an object like {{"no-cache": true}}, got {body_field!r}')
        for k in ("no-cache", "no-store", "use-cache"):
            if k in body_field and not isinstance(body_field[k], bool):
                raise _bad(f"cache.{k} must be true or false")
        if body_field.get("no-cache") or body_field.get("use-cache") is False:
            read = False
        if body_field.get("no-store"):
            write = False
        if body_field.get("ttl") is not None:
            ttl = _seconds(body_field["ttl"], "ttl")
        if body_field.get("s-maxage") is not None:
            max_age = _seconds(body_field["s-maxage"], "s-maxage")
        ns = body_field.get("namespace")
        if ns is not None:
            if not isinstance(ns, str):
                raise _bad("cache.namespace must be a string")
            namespace = ns
    return Controls(read, write, max_age, ttl, namespace)
