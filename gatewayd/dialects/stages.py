"""Stream stages: SSE events of one dialect in, the client's events out.

A stage sits in the relay's one producer chain (:mod:`gatewayd.web.relay`): it
is fed each upstream event as it arrives, told when the stream ended (cleanly or
not), and returns the bytes to write. :class:`PassThrough` writes events as they
are and ends a broken stream with the dialect's own error event.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gatewayd.dialects.errors import anthropic_error
from gatewayd.upstream.sse import DONE, SSEFramer, data_event, event_data

#: One encoder and decoder for every event (``json.dumps`` with arguments builds an
#: encoder per call; ``json.loads`` of bytes detects their encoding each time).
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_DECODE = json.JSONDecoder().decode


def named_event(name: str, payload: dict[str, Any]) -> bytes:
    """One ``event: NAME`` + ``data: JSON`` event."""
    return f"event: {name}\ndata: {_ENCODE(payload)}\n\n".encode()


class Stage:
    """The identity stage for chat clients."""

    def __init__(self) -> None:
        #: The stream reached its dialect's end marker: a client close after it is no loss.
        self.complete = False

    def feed(self, data: bytes) -> bytes:
        if data.endswith(DONE):
            self.complete = True
        return data

    def end(self) -> bytes:
        """The upstream stream ended cleanly: anything still to write."""
        return b""

    def fail(self, status: int, error: dict[str, Any]) -> bytes:
        """The upstream broke off mid-stream: the dialect's error event."""
        return data_event({"error": error})


class NativeMessages(Stage):
    """Anthropic events from an Anthropic upstream, passed through."""

    def feed(self, data: bytes) -> bytes:
        if b"message_stop" in data:
            self.complete = True
        return data

    def fail(self, status: int, error: dict[str, Any]) -> bytes:
        return named_event("error", anthropic_error(status, error))


class Translating(Stage):
    """Chat chunk events in (framed again: the reader hands over several at once),
    parsed JSON out to :meth:`chunk`; subclasses build their dialect's events."""

    def __init__(self) -> None:
        super().__init__()
        self._framer = SSEFramer()
        #: The OpenAI usage object the stream reported, for metrics.
        self.usage: dict[str, Any] | None = None
        #: The error event went out: nothing follows it.
        self.failed = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._framer.feed(data):
            raw = event_data(event)
            if raw is None:
                continue
            if raw.strip() == b"[DONE]":
                out += self.finish()
                continue
            try:
                obj = _DECODE(raw.decode())
            except ValueError:  # (UnicodeDecodeError among them)
                continue
            if not isinstance(obj, dict):
                continue
            if isinstance(obj.get("error"), dict):
                out.append(self.fail(502, obj["error"]))
                continue
            if isinstance(obj.get("usage"), dict):
                self.usage = obj["usage"]
            out += self.chunk(obj)
        return b"".join(out)

    def end(self) -> bytes:
        return b"".join(self.finish())

    def chunk(self, obj: dict[str, Any]) -> list[bytes]:
        raise NotImplementedError

    def finish(self) -> list[bytes]:
        """The closing events (once)."""
        raise NotImplementedError


StageFactory = Callable[[], Stage]
