"""Strict JSON for upstream bytes, and OpenAI's error object made to its schema.

Python's :mod:`json` reads and writes ``NaN`` and ``Infinity``, which are not JSON,
and raises RecursionError (not ValueError) on deep nesting. Everything the gateway
reads from an upstream goes through :func:`loads_strict`, which turns both into
ValueError, so that such a body is a bad upstream response and never a 500.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


#: One decoder for every call: ``json.loads`` with an argument builds a new one each time
#: (a scanner included), 2 % of a request's CPU in the profile.
_STRICT = json.JSONDecoder(parse_constant=_no_constant)


def json_text(data: bytes | bytearray) -> str:
    """JSON bytes as text, in the encoding ``json.loads`` would detect: UTF-8 at once
    when the first byte is ``{`` and the second not NUL (which is what detection finds
    then), else by detection (UTF-16 and UTF-32, with or without a BOM)."""
    if data[:1] == b"{" and data[1:2] != b"\x00":
        return data.decode("utf-8", "surrogatepass")
    return data.decode(json.detect_encoding(data), "surrogatepass")


def loads_strict(data: bytes | str) -> Any:
    """``json.loads`` that refuses NaN/Infinity and too-deep nesting with ValueError
    (UnicodeDecodeError, a ValueError too, for bytes that are not UTF-8)."""
    try:
        if isinstance(data, bytes | bytearray):  # as json.loads reads bytes
            data = json_text(data)
        elif not isinstance(data, str) or data.startswith("\ufeff"):
            return json.loads(data, parse_constant=_no_constant)  # its own errors
        return _STRICT.decode(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, allow_nan=False)


def normalise_error(error: dict[str, Any], default_type: str) -> dict[str, Any]:
    """``error`` with OpenAI's four fields made to its schema: ``message`` and ``type``
    strings, ``param`` and ``code`` a string or null (llama.cpp sends an integer
    ``code``). Other fields are kept as they are."""
    out = dict(error)
    message = out.get("message")
    out["message"] = "" if message is None else _as_text(message)
    kind = out.get("type")
    out["type"] = _as_text(kind) if kind not in (None, "") else default_type
    for key in ("param", "code"):
        value = out.get(key)
        out[key] = None if value is None else _as_text(value)
    return out
