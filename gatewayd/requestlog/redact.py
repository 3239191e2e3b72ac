"""Secrets out of a stored body (``store_bodies``): fields named like a credential, and
strings that look like one, or equal a secret the config holds."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

#: Field names whose value is replaced whole (lower-case, ``-`` read as ``_``).
SECRET_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "secret",
        "client_secret",
        "password",
        "authorization",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "x_api_key",
        "aws_secret_access_key",
        "aws_session_token",
    }
)
#: Strings that are credentials whatever field holds them.
_SECRET_TEXT = re.compile(
    r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-~+/=]{8,}|AKIA[0-9A-Z]{16}"
    r"|xox[abpr]-[A-Za-z0-9\-]{8,}|gh[pousr]_[A-Za-z0-9]{20,})"
)
REDACTED = "[redacted]"
#: The most of one body stored.
MAX_BODY = 64 * 1024


class Redactor:
    """Redacts bodies; ``secrets``: the config's own (upstream keys, the master key)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(s for s in secrets if s and len(s) >= 4)

    def text(self, s: str) -> str:
        for secret in self.secrets:
            if secret in s:
                s = s.replace(secret, REDACTED)
        return _SECRET_TEXT.sub(REDACTED, s)

    def value(self, v: Any) -> Any:
        if isinstance(v, dict):
            return {
                k: REDACTED
                if isinstance(k, str) and k.lower().replace("-", "_") in SECRET_FIELDS
                else self.value(x)
                for k, x in v.items()
            }
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, str):
            return self.text(v)
        return v

    def body(self, raw: Any) -> str | None:
        """A JSON value or bytes, as stored text: redacted and cut at :data:`MAX_BODY`."""
        if raw is None:
            return None
        if isinstance(raw, bytes | bytearray):
            try:
                raw = json.loads(raw)
            except ValueError:
                return self.text(bytes(raw[:MAX_BODY]).decode("utf-8", "replace"))
        text = json.dumps(self.value(raw), ensure_ascii=False)
        return text[:MAX_BODY]
