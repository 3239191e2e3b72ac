"""One cached answer (:class:`CachedAnswer`): what the upstream answered, JSON body or
the stream's events block by block (the chunk boundaries kept), and how it is stored
(:meth:`CachedAnswer.dumps` / :meth:`CachedAnswer.loads`, text for Redis)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gatewayd.dialects import Dialect

#: Upstream headers that describe one call, not the answer: not replayed on a hit.
CALL_HEADERS = (b"x-ratelimit-", b"anthropic-ratelimit-", b"retry-after", b"x-request-id")


def answer_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """The upstream headers kept with an entry (lower-case names)."""
    return tuple((k, v) for k, v in headers if not k.lower().startswith(CALL_HEADERS))


#: Per-entry bookkeeping counted on top of the bytes held (a rough Python overhead).
ENTRY_OVERHEAD = 256


def _text(b: bytes) -> str:
    # SSE and JSON are UTF-8; surrogateescape keeps any stray byte exact.
    return b.decode("utf-8", "surrogateescape")


def _bytes(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class CachedAnswer:
    """A complete, successful answer of one deployment."""

    status: int
    #: The dialect of ``body``/``events``: the client's (a native upstream) or chat.
    dialect: Dialect
    deployment: str
    #: The JSON body, or None for a stream.
    body: bytes | None
    #: A stream's SSE events, as the upstream's reader delivered them (the blocks kept).
    events: tuple[bytes, ...] | None
    usage: dict[str, Any] | None
    #: When it was stored (the clock's seconds), for ``age`` and ``max-age``.
    stored: float
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def size(self) -> int:
        """Bytes it holds (for ``max_bytes``)."""
        n = ENTRY_OVERHEAD + len(self.body or b"")
        for block in self.events or ():
            n += len(block) + 64
        return n

    def dumps(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "status": self.status,
                "dialect": self.dialect.value,
                "deployment": self.deployment,
                "body": None if self.body is None else _text(self.body),
                "events": None if self.events is None else [_text(e) for e in self.events],
                "usage": self.usage,
                "stored": self.stored,
                "headers": [[_text(k), _text(v)] for k, v in self.headers],
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str) -> CachedAnswer | None:
        """None for anything that is not an entry of this version (never raises)."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or d.get("v") != 1:
                return None
            body = d["body"]
            events = d["events"]
            return cls(
                status=int(d["status"]),
                dialect=Dialect(d["dialect"]),
                deployment=str(d["deployment"]),
                body=None if body is None else _bytes(body),
                events=None if events is None else tuple(_bytes(e) for e in events),
                usage=d["usage"] if isinstance(d.get("usage"), dict) else None,
                stored=float(d["stored"]),
                headers=tuple((_bytes(k), _bytes(v)) for k, v in d.get("headers") or ()),
            )
        except (ValueError, KeyError, TypeError):
            return None
