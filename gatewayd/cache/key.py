"""The cache key: the alias, the endpoint, the client's dialect, the scope (the
client key's name unless ``scope: shared``) and the request body in canonical form.

Canonical: keys sorted, no whitespace, integral floats as integers (``1.0`` and ``1``
ask the same), and the fields that do not change the answer left out (:data:`IGNORED`),
``stream`` among them: a streamed hit of a JSON answer and a JSON hit of a streamed
one share one entry.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Top-level body fields that do not change the answer.
IGNORED = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "metadata",
        "cache",  # LiteLLM's per-request cache controls (stripped before the upstream)
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)


def _normal(value: Any) -> Any:
    """``value`` with integral floats as ints, recursively (bools left alone)."""
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        return value
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    return value


def canonical_body(body: dict[str, Any]) -> bytes:
    """The body as the key sees it: sorted, compact, without :data:`IGNORED` fields."""
    kept = {k: _normal(v) for k, v in body.items() if k not in IGNORED}
    return json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def cache_key(
    alias: str,
    endpoint: str,
    dialect: str,
    body: dict[str, Any],
    scope: str | None,
    namespace: str = "",
) -> str:
    """A hex digest naming one answer. ``scope``: the client key's name (None: shared,
    or no key); ``namespace``: the configured or per-request namespace."""
    h = hashlib.sha256()
    for part in (namespace, scope if scope is not None else "\x00shared", alias, endpoint, dialect):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(canonical_body(body))
    return h.hexdigest()
