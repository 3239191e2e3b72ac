"""Keeping secrets out of what upstreams echo, and out of URLs in logs and errors."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

#: Shorter values are not treated as secrets (they would mangle ordinary text).
MIN_SECRET = 6
#: Query parameters shown in logs; every other value is masked.
_SAFE_QUERY = {"api-version"}


class Redactor:
    """Replaces each secret (and its JSON-escaped spelling) with ``***``."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        found: set[str] = set()
        for s in secrets:
            if isinstance(s, str) and len(s) >= MIN_SECRET:
                found.add(s)
                found.add(json.dumps(s)[1:-1])  # as it appears inside a JSON string
        self._text = sorted(found, key=len, reverse=True)
        self._data = [s.encode("utf-8", "replace") for s in self._text]

    def __bool__(self) -> bool:
        return bool(self._text)

    def data(self, raw: bytes) -> bytes:
        """``raw`` with every secret replaced: done before any cut, so no fragment stays."""
        for s in self._data:
            if s in raw:
                raw = raw.replace(s, b"***")
        return raw

    def text(self, value: str) -> str:
        for s in self._text:
            if s in value:
                value = value.replace(s, "***")
        return value

    def value(self, value: Any) -> Any:
        """A JSON value with secrets replaced in every string, keys included."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value


def split_credentials(url: str) -> tuple[str, list[str]]:
    """``url`` without ``user:password@``, and the credentials it held (as secrets)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, []
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = SplitResult(parts.scheme, hostport, parts.path, parts.query, parts.fragment)
    return clean.geturl(), [x for x in (userinfo, user, password) if x]


def loggable_url(url: str) -> str:
    """``url`` for a log line: no credentials, query values masked but ``api-version``."""
    clean, _ = split_credentials(url)
    parts = urlsplit(clean)
    if not parts.query:
        return clean
    query = "&".join(
        f"{k}={v if k in _SAFE_QUERY else '***'}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return SplitResult(parts.scheme, parts.netloc, parts.path, query, "").geturl()
