"""Every error the client sees, ours or an upstream's, in OpenAI's shape."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

from gatewayd.providers.base import openai_error


def error_json(error: dict[str, Any]) -> bytes:
    """``{"error": {...}}`` as bytes."""
    return json.dumps({"error": error}).encode()


def write_error(
    request: Request,
    status: int,
    message: str,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> bytes:
    """Set the status and JSON headers; return the body to write."""
    return write_error_object(request, status, openai_error(message, type, code, param))


#: Reason phrases Twisted does not know (it would send "Unknown Status").
_REASONS = {429: b"Too Many Requests", 529: b"Site Overloaded"}


def set_status(request: Request, status: int) -> None:
    """``setResponseCode`` with a reason phrase for the codes Twisted does not know."""
    request.setResponseCode(status, _REASONS.get(status))


def write_error_object(request: Request, status: int, error: dict[str, Any]) -> bytes:
    set_status(request, status)
    request.setHeader(b"content-type", b"application/json")
    return error_json(error)


def unauthorized(request: Request) -> dict[str, Any]:
    """Ask for a key (``WWW-Authenticate``); the 401's error object, in every dialect."""
    request.setHeader(b"www-authenticate", b'Bearer realm="gatewayd"')
    return openai_error(
        "invalid or missing API key: send it as 'Authorization: Bearer KEY', "
        "'x-api-key' or 'api-key'",
        "authentication_error",
        "invalid_api_key",
    )


def write_unauthorized(request: Request) -> bytes:
    """The 401 for a missing or wrong master key (with its ``WWW-Authenticate``)."""
    return write_error_object(request, 401, unauthorized(request))
