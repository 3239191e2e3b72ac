"""Server-sent events framing: split a byte stream into complete events.

Upstreams send events split across reads, several in one read, with ``\\n``,
``\\r\\n`` or ``\\r`` line endings, comments and ``event:`` lines. The framer
hands out each complete event (normalised to ``\\n`` endings, ending in a blank
line) as soon as its terminating blank line has arrived.
"""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


class SSEFramer:
    """Incremental splitter: :meth:`feed` bytes, get back the events they completed."""

    __slots__ = ("_buf", "_skip_lf")

    def __init__(self) -> None:
        self._buf = b""
        # The last read ended in \r: a \n starting the next read is its other half.
        self._skip_lf = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every event it completed, in order."""
        if self._skip_lf and data.startswith(b"\n"):
            data = data[1:]
        self._skip_lf = False
        if b"\r" in data:
            self._skip_lf = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + data
        parts = buf.split(b"\n\n")
        self._buf = parts.pop()
        out = []
        for p in parts:
            p = p.lstrip(b"\n")  # stray blank lines between events
            if p:
                out.append(p + b"\n\n")
        return out

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet complete."""
        return self._buf


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` field of one event, or None if it has none (a comment)."""
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            v = line[5:]
            lines.append(v[1:] if v.startswith(b" ") else v)
    return b"\n".join(lines) if lines else None


def is_done(event: bytes) -> bool:
    """True for OpenAI's end-of-stream event ``data: [DONE]``."""
    return b"[DONE]" in event and event_data(event) == b"[DONE]"


def data_event(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event carrying ``payload`` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def comment_event(text: str = "") -> bytes:
    """An SSE comment: ignored by clients, keeps idle intermediaries from closing."""
    return b": " + text.encode() + b"\n\n"
