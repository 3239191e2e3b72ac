"""What every console answer carries: a strict Content-Security-Policy and no caching."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

#: Only this origin's own scripts, styles and fetches; no frames, no inline code.
CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def secure_headers(request: Request) -> None:
    request.setHeader(b"content-security-policy", CSP)
    request.setHeader(b"x-content-type-options", b"nosniff")
    # not no-referrer: with it, Chromium sends "Origin: null" on the sign-in form
    request.setHeader(b"referrer-policy", b"same-origin")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cache-control", b"no-store")


def json_answer(request: Request, payload: Any, status: int = 200) -> bytes:
    secure_headers(request)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


def json_error(request: Request, status: int, message: str, code: str) -> bytes:
    return json_answer(
        request, {"error": {"message": message, "type": "console_error", "code": code}}, status
    )


def finish(request: Request, body: bytes) -> None:
    """Writes a late answer, unless the client has gone."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
