"""Server-sent events framing: split a byte stream into complete events.

Upstreams send events split across reads, several in one read, with ``\\n``,
``\\r\\n`` or ``\\r`` line endings, comments and ``event:`` lines. The framer
hands out each complete event (normalised to ``\\n`` endings, ending in a blank
line) as soon as its terminating blank line has arrived.

Framing is linear in the bytes fed (each byte is searched once), and one event
may hold at most ``max_event`` bytes: past that :class:`EventTooLarge` is raised
rather than buffering an endless event.
"""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"
#: The largest SSE event accepted from an upstream (one chunk, not a whole stream).
MAX_EVENT_BYTES = 8 * 1024 * 1024


class EventTooLarge(ValueError):
    """An upstream event grew past the framer's bound without ending."""


class SSEFramer:
    """Incremental splitter: :meth:`feed` bytes, get back the events they completed."""

    __slots__ = ("_buf", "_max", "_skip_lf")

    def __init__(self, max_event: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_event
        # The last read ended in \r: a \n starting the next read is its other half.
        self._skip_lf = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every event it completed, in order.

        Raises :class:`EventTooLarge` when one event passes ``max_event`` bytes."""
        return self._events_from(self._take(data))

    def feed_block(self, data: bytes) -> bytes:
        """Add ``data``; return the events it completed as one block of bytes: the same
        as ``b"".join(self.feed(data))``, without a copy per event when the block is
        plain (no stray blank lines, every event within the bound)."""
        if (
            not self._buf
            and not self._skip_lf
            and data.endswith(b"\n\n")
            and data[0] != 10
            and len(data) <= self._max
            and b"\r" not in data
            and b"\n\n\n" not in data
        ):
            # The usual read: whole plain events and nothing pending: they are the block.
            return data
        start = self._take(data)
        buf = self._buf
        end = buf.rfind(b"\n\n", start) + 2
        if 2 <= end <= self._max and buf[0] != 10 and buf.find(b"\n\n\n", 0, end) == -1:
            block = bytes(buf[:end])
            del buf[:end]
            self._check_pending()
            return block
        # Nothing complete, or not plain: event by event.
        return b"".join(self._events_from(start))

    def _take(self, data: bytes) -> int:
        """Append ``data`` (line endings made ``\\n``); where to search for new ends."""
        if self._skip_lf and data.startswith(b"\n"):
            data = data[1:]
        self._skip_lf = False
        if b"\r" in data:
            self._skip_lf = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf
        # Only the new bytes (and the one before them: a blank line may straddle the
        # reads) are searched: rescanning the whole buffer made a long event quadratic.
        start = max(0, len(buf) - 1)
        buf += data
        return start

    def _events_from(self, start: int) -> list[bytes]:
        buf = self._buf
        i = buf.find(b"\n\n", start)
        out = []
        pos = 0
        while i != -1:
            if i - pos > self._max:
                raise EventTooLarge(f"an upstream event is larger than {self._max} bytes")
            # One copy, with its blank line; stray blank lines between events are dropped
            # (all-newline "events" strip to nothing).
            event = bytes(buf[pos : i + 2])
            if event[0] == 10:  # b"\n"
                event = event.lstrip(b"\n")
            if event:
                out.append(event)
            pos = i + 2
            i = buf.find(b"\n\n", pos)
        if pos:
            del buf[:pos]  # cheap: a bytearray drops its head without copying the rest
        self._check_pending()
        return out

    def _check_pending(self) -> None:
        """The event not yet complete must stay within the bound."""
        if len(self._buf) > self._max:
            raise EventTooLarge(f"an upstream event is larger than {self._max} bytes")

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet complete."""
        return bytes(self._buf)


def split_block(block: bytes) -> list[bytes]:
    """The events of a plain block from :meth:`SSEFramer.feed_block`, one by one."""
    return [e + b"\n\n" for e in block.split(b"\n\n") if e]


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` field of one event, or None if it has none (a comment)."""
    if event.startswith(b"event:"):  # a named event: its name line skipped
        event = event[event.find(b"\n") + 1 :]
    if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2:
        return event[6:-2]  # the usual event: one data line, then its blank line
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
    """One ``data:`` event carrying ``payload`` as JSON (never NaN or Infinity:
    raises ValueError instead of sending what no JSON parser reads)."""
    return b"data: " + _STRICT_ENCODE(payload).encode() + b"\n\n"


#: One encoder for every event (``json.dumps`` with arguments builds one per call).
_STRICT_ENCODE = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def comment_event(text: str = "") -> bytes:
    """An SSE comment: ignored by clients, keeps idle intermediaries from closing."""
    return b": " + text.encode() + b"\n\n"
