"""What the mock provider reads from a request, checked as OpenAI checks it.

Each reader returns the value or raises an :class:`UpstreamFailure` that is the 400
OpenAI would answer (``invalid_request_error`` with ``param`` and ``code``), so a
client test against the mock sees the error a real upstream would give.
"""

from __future__ import annotations

from typing import Any

from gatewayd.providers.base import FailureKind, UpstreamFailure, openai_error

#: An input or prompt: a string, or one array of token ids.
Item = str | list[int]


def invalid(message: str, param: str | None, code: str | None = "invalid_value") -> UpstreamFailure:
    """The 400 OpenAI answers for a bad parameter."""
    return UpstreamFailure(
        FailureKind.HTTP, 400, openai_error(message, "invalid_request_error", code, param)
    )


def _type_name(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", float: "a decimal", list: "an array"}
    return "null" if value is None else names.get(type(value), "an object")


def integer(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    """An integer parameter within ``[lo, hi]``; ``default`` when absent or null."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(
            f"Invalid type for '{name}': expected an integer, but got {_type_name(value)} instead.",
            name,
            "invalid_type",
        )
    if value < lo:
        raise invalid(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {lo}, "
            f"but got {value} instead.",
            name,
            "integer_below_minimum",
        )
    if value > hi:
        raise invalid(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {hi}, "
            f"but got {value} instead.",
            name,
            "integer_above_maximum",
        )
    return value


def flag(body: dict[str, Any], name: str) -> bool:
    """A boolean parameter, false when absent or null."""
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(
            f"Invalid type for '{name}': expected a boolean, but got {_type_name(value)} instead.",
            name,
            "invalid_type",
        )
    return value


def _is_tokens(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


def items(body: dict[str, Any], name: str, null: Item | None = None) -> list[Item]:
    """``input`` / ``prompt`` as a list of items: a string, an array of strings, an array of
    token ids (one item: ``[1, 2, 3]``), or an array of token arrays (``[[1, 2], [3]]``).
    ``null``: what an explicit JSON null stands for (OpenAI documents ``prompt`` as
    nullable, meaning ``<|endoftext|>``); without it a null is a missing parameter."""
    if name not in body or (body[name] is None and null is None):
        raise invalid(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    value: Any = body[name] if body[name] is not None else null
    if isinstance(value, str) and value:
        return [value]
    if _is_tokens(value):
        return [list(value)]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) and v for v in value):
            return list(value)
        if all(_is_tokens(v) for v in value):
            return [list(v) for v in value]
    raise invalid(
        f"'$.{name}' is invalid: expected a non-empty string, an array of non-empty strings, "
        "an array of integers or an array of non-empty arrays of integers.",
        name,
    )


def token_count(item: Item) -> int:
    """A rough count: words of a string, or the length of a token array."""
    return len(item) if isinstance(item, list) else max(1, len(item.split()))
