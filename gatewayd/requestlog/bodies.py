"""Bodies as the request log stores them (only with ``store_bodies``): JSON text,
secret-looking fields masked and every known secret replaced, cut at a size."""

from __future__ import annotations

import json
from typing import Any

from gatewayd.upstream.redact import Redactor

#: Longest body kept, in characters.
MAX_BODY = 64 * 1024
#: Field names whose values are never stored.
SECRET_FIELDS = frozenset(
    {"api_key", "apikey", "api-key", "authorization", "password", "secret", "token", "key"}
)


def masked(value: Any) -> Any:
    """``value`` with every secret-looking field's value replaced by ``***``."""
    if isinstance(value, dict):
        return {k: "***" if k.lower() in SECRET_FIELDS else masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    return value


def body_text(value: Any, redactor: Redactor) -> str:
    """A JSON value (or raw bytes) as stored: masked, redacted, cut."""
    if isinstance(value, bytes):
        try:
            value = json.loads(value)
        except ValueError:
            text = value.decode("utf-8", "replace")
            return redactor.text(text)[:MAX_BODY] if redactor else text[:MAX_BODY]
    text = json.dumps(masked(value), ensure_ascii=False)
    if redactor:
        text = redactor.text(text)
    return text[:MAX_BODY]


class StreamCopy:
    """A stream tap keeping the first :data:`MAX_BODY` bytes of the events."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.complete: bool | None = None

    def event(self, data: bytes) -> None:
        if self.size < MAX_BODY:
            self.parts.append(data[: MAX_BODY - self.size])
            self.size += len(data)

    def end(self, complete: bool) -> None:
        self.complete = complete

    def text(self, redactor: Redactor) -> str:
        text = b"".join(self.parts).decode("utf-8", "replace")
        return redactor.text(text) if redactor else text
