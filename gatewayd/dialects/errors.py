"""Errors in each dialect's shape, and the one translation error."""

from __future__ import annotations

from typing import Any

#: Anthropic's error types, by the HTTP status that carries them.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_ERROR_TYPES = frozenset(_ANTHROPIC_TYPES.values())
_BY_STATUS = frozenset({401, 402, 403, 404, 413, 429, 529})


class TranslationError(Exception):
    """A request field that the target dialect cannot express: a 400 naming the field."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def untranslatable(field: str, target: str) -> TranslationError:
    return TranslationError(
        f"{field} cannot be translated for this model's upstream ({target}); "
        "remove it, or set drop_params: true to drop it",
        field,
    )


def anthropic_error_type(status: int, openai_type: str | None = None) -> str:
    """Anthropic's error ``type`` for an error: the status decides where Anthropic has
    one type for it, else the error's own when it already is an Anthropic type."""
    if status in _BY_STATUS:
        return _ANTHROPIC_TYPES[status]
    if openai_type in ANTHROPIC_ERROR_TYPES:
        return openai_type
    if openai_type == "timeout":
        return "timeout_error"
    if status in _ANTHROPIC_TYPES:
        return _ANTHROPIC_TYPES[status]
    return "invalid_request_error" if status < 500 else "api_error"


def anthropic_error(status: int, error: dict[str, Any]) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for an OpenAI error object."""
    kind = error.get("type")
    return {
        "type": "error",
        "error": {
            "type": anthropic_error_type(status, kind if isinstance(kind, str) else None),
            "message": str(error.get("message") or ""),
        },
    }
