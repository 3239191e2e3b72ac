"""CORS for browser clients (``general_settings.cors_allow_origins``): the headers on an
allowed origin's answers, and the preflight answered."""

from __future__ import annotations

from twisted.web.server import Request

#: The answer headers a browser script may read.
EXPOSED = (
    b"x-gatewayd-model, x-gatewayd-deployment, x-gatewayd-attempts, x-gatewayd-fallback, "
    b"x-gatewayd-cache, age, x-request-id"
)


def answer_cors(request: Request, allowed: tuple[str, ...]) -> bool:
    """Add CORS headers for an allowed ``Origin``; answer a preflight. True if answered."""
    origin = request.getHeader(b"origin")
    if not allowed or origin is None:
        return False
    if "*" not in allowed and origin.decode("latin-1") not in allowed:
        return False
    request.setHeader(b"access-control-allow-origin", b"*" if "*" in allowed else origin)
    request.setHeader(b"vary", b"Origin")
    request.setHeader(b"access-control-expose-headers", EXPOSED)
    if request.method != b"OPTIONS" or request.getHeader(b"access-control-request-method") is None:
        return False
    request.setResponseCode(204)
    request.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
    wanted = request.getHeader(b"access-control-request-headers")
    request.setHeader(b"access-control-allow-headers", wanted or b"authorization, content-type")
    request.setHeader(b"access-control-max-age", b"600")
    request.finish()
    return True
