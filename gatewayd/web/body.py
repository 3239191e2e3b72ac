"""Reading a client's JSON request body, the same for every dialect.

:func:`parse_body` either returns the body as a dict or raises :class:`BodyError`,
which carries the status and an OpenAI-style error description; each dialect renders
it in its own error shape.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from gatewayd.upstream.wirejson import json_text
from gatewayd.web.request import GatewayRequest


@dataclass(frozen=True)
class BodyError(Exception):
    """The client's body is unusable: what to answer."""

    status: int
    message: str
    code: str
    param: str | None = None
    type: str = "invalid_request_error"


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON: upstreams would choke on them."""
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    """A JSON number too large for a float (``1e999``) would reach upstreams as ``Infinity``,
    which is not JSON: refuse it here."""
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


class _NotFinite(ValueError):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text if len(text) <= 40 else text[:37] + "..."


#: One decoder for every request: ``json.loads`` with arguments builds one (and its
#: scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite)


def _loads(raw: bytes) -> Any:
    """``json.loads(raw, ...)`` with the shared decoder (the same encoding detection)."""
    return _DECODER.decode(json_text(raw))


def parse_body(request: GatewayRequest) -> tuple[dict[str, Any], bytes]:
    """The request's JSON object and its raw bytes; raises :class:`BodyError`."""
    if request.too_large:
        raise BodyError(
            413,
            f"request body larger than max_request_body_size ({request.max_body_size} bytes)",
            "request_too_large",
        )
    assert request.content is not None
    raw = request.content.read()
    try:
        body = _loads(raw)
    except _NotFinite as e:
        raise BodyError(
            400,
            f"request body has the number {e.text}, which is out of range "
            "(numbers must be finite double-precision values)",
            "invalid_number",
        ) from None
    except RecursionError:
        raise BodyError(400, "request body is nested too deeply", "invalid_json") from None
    except ValueError as e:
        raise BodyError(400, f"request body is not valid JSON: {e}", "invalid_json") from None
    if not isinstance(body, dict):
        raise BodyError(400, "request body must be a JSON object", "invalid_request")
    return body, raw


def model_alias(body: dict[str, Any]) -> str:
    """The ``model`` field, which must be a string; raises :class:`BodyError`."""
    alias = body.get("model")
    if alias is None:
        raise BodyError(400, "you must provide a model parameter", "missing_model", "model")
    if not isinstance(alias, str):
        raise BodyError(400, "model must be a string", "invalid_model", "model")
    return alias


def stream_flag(body: dict[str, Any]) -> bool:
    """The ``stream`` field: absent or null is False; anything but a boolean is an error."""
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise BodyError(400, "stream must be a boolean", "invalid_type", "stream")
    return bool(stream)
