"""Client authentication against the master key."""

from __future__ import annotations

import hmac

from twisted.web.server import Request


def presented_key(request: Request) -> bytes | None:
    """The key the client sent: ``Authorization: Bearer``, ``x-api-key`` or ``api-key``."""
    auth = request.getHeader(b"authorization")
    if auth:
        scheme, _, token = auth.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    for name in (b"x-api-key", b"api-key"):
        value = request.getHeader(name)
        if value:
            return value.strip()
    return None


def is_authorized(request: Request, master_key: str | None) -> bool:
    """True when no master key is set, or the client presented it (constant time)."""
    if master_key is None:
        return True
    key = presented_key(request)
    if key is None:
        return False
    return hmac.compare_digest(key, master_key.encode())
