"""A recorded stream played back (:class:`ReplayStream`): the same blocks, in order,
at once, paused and resumed by the client's transport like a live upstream."""

from __future__ import annotations

from collections.abc import Sequence

from gatewayd.dialects import Dialect
from gatewayd.upstream.outcomes import EventStream, StreamSink
from gatewayd.upstream.sse import DONE


def complete(dialect: Dialect, events: Sequence[bytes]) -> bool:
    """The recorded stream reached its dialect's end marker (it was not cut short)."""
    if not events:
        return False
    tail = events[-1] if len(events[-1]) > 64 else b"".join(events[-3:])
    if dialect is Dialect.MESSAGES:
        return b"message_stop" in tail
    if dialect is Dialect.RESPONSES:
        return b"response.completed" in tail
    return tail.endswith(DONE)


class ReplayStream(EventStream):
    """Delivers ``blocks`` to its sink as fast as the sink takes them, then ends cleanly."""

    def __init__(self, blocks: Sequence[bytes]) -> None:
        self.blocks = blocks
        self._at = 0
        self._sink: StreamSink | None = None
        self._paused = False
        self._done = False
        self._pumping = False

    def start(self, sink: StreamSink) -> None:
        self._sink = sink
        self._pump()

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._pump()

    def cancel(self) -> None:
        self._done = True

    def _pump(self) -> None:
        sink = self._sink
        if sink is None or self._pumping:
            return
        self._pumping = True  # a resume from inside a write must not deliver twice
        try:
            while not self._paused and not self._done and self._at < len(self.blocks):
                block = self.blocks[self._at]
                self._at += 1
                sink.event(block)
            if not self._done and self._at >= len(self.blocks):
                self._done = True
                sink.end(None)
        finally:
            self._pumping = False
