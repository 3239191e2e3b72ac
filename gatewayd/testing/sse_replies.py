"""The fake upstream's streamed replies: SSE bodies written as HTTP chunks, paced,
cut short or framed oddly on request, with the client's going noticed."""

from __future__ import annotations

import selectors
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping

from gatewayd.testing.behaviours import (
    _SSE_DONE,
    RecordedRequest,
    SSEFramingStream,
    Stream,
    StreamStats,
    StreamThenCut,
    _split_words,
)
from gatewayd.testing.served import ServedFake


class ServerClosing(Exception):
    """Raised inside a handler when the server is shutting down."""


class SSEReplies(ABC):
    """Streamed replies, mixed into the fake's request handler (which provides the
    connection and the abstract parts below)."""

    connection: socket.socket
    close_connection: bool
    _request_id: str

    @property
    @abstractmethod
    def _fake(self) -> ServedFake:
        """The fake this handler serves."""

    @abstractmethod
    def _route(self, record: RecordedRequest) -> tuple[str | None, str]:
        """The endpoint the request asked for, and the path's rest."""

    @abstractmethod
    def _emit_head(
        self, status: int, defaults: list[tuple[str, str]], extra: Mapping[str, str]
    ) -> None:
        """Send the status line and headers."""

    @abstractmethod
    def _abort(self) -> None:
        """Reset the connection (RST)."""

    def _controlled_stream(self, record: RecordedRequest, spec: Stream) -> None:
        fake = self._fake
        request = fake._lenient_json(record)
        model = str(request.get("model") or "fake-model")
        endpoint, _ = self._route(record)
        words = _split_words(fake.content if spec.content is None else spec.content) or ["x"]
        count = len(words) if spec.events is None else max(0, spec.events)
        pad = max(0, spec.event_size)

        def pieces() -> Iterator[str]:
            for i in range(count):
                piece = words[i % len(words)]
                yield piece.ljust(pad, ".") if pad else piece

        if spec.sndbuf is not None:
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, spec.sndbuf)
            except OSError:
                pass
        stats = self._start_sse(record, spec.headers)
        if spec.first_byte_delay > 0 and not self._idle(stats, spec.first_byte_delay):
            return
        events: Iterable[bytes] = fake._stream_events(endpoint, request, model, pieces(), "stop")
        if spec.done:
            events = chain(events, [_SSE_DONE])
        for i, event in enumerate(events):
            if i > 0 and spec.interval > 0 and not self._idle(stats, spec.interval):
                return
            if not self._write_chunk(stats, event):
                return
        self._end_chunks(stats)

    def _stream_then_cut(self, record: RecordedRequest, spec: StreamThenCut) -> None:
        fake = self._fake
        request = fake._lenient_json(record)
        model = str(request.get("model") or "fake-model")
        endpoint, _ = self._route(record)
        stats = self._start_sse(record, {})
        events = fake._stream_events(endpoint, request, model, _split_words(fake.content), "stop")
        for i, event in enumerate(events):
            if i >= spec.events:
                break
            if not self._write_chunk(stats, event):
                return
        # Give loopback a moment to deliver what was sent before the RST discards our buffer.
        fake._closing.wait(0.02)
        self._abort()

    def _framing_stream(self, record: RecordedRequest, spec: SSEFramingStream) -> None:
        stats = self._start_sse(record, {})
        first = True
        for piece in spec.pieces:
            if not piece:
                continue
            if not first and spec.interval > 0 and not self._idle(stats, spec.interval):
                return
            first = False
            if not self._write_chunk(stats, piece):
                return
        self._end_chunks(stats)

    def _start_sse(self, record: RecordedRequest, extra: Mapping[str, str]) -> StreamStats:
        defaults = [
            ("Content-Type", "text/event-stream; charset=utf-8"),
            ("Transfer-Encoding", "chunked"),
            ("Cache-Control", "no-cache"),
            ("x-request-id", self._request_id),
        ]
        self._emit_head(200, defaults, extra)
        return self._fake._new_stream_stats(record)

    def _write_chunk(self, stats: StreamStats, data: bytes) -> bool:
        """Send ``data`` as one HTTP chunk; return False (and note it) if the peer is gone."""
        if not data:
            return True
        frame = b"%x\r\n%s\r\n" % (len(data), data)
        try:
            self.connection.sendall(frame)
        except OSError:
            self._peer_gone(stats)
            return False
        stats.bytes_written += len(frame)
        stats.events_written += 1
        return True

    def _end_chunks(self, stats: StreamStats) -> None:
        try:
            self.connection.sendall(b"0\r\n\r\n")
        except OSError:
            self._peer_gone(stats)
            return
        stats.bytes_written += 5
        stats.finished = True

    def _peer_gone(self, stats: StreamStats) -> None:
        self.close_connection = True
        if self._fake._closing.is_set():
            raise ServerClosing
        if not stats.client_closed:
            stats.closed_at = time.monotonic()
            stats.client_closed = True

    def _idle(self, stats: StreamStats, seconds: float) -> bool:
        """Sleep ``seconds`` while watching for the peer's close; False if it closed."""
        deadline = time.monotonic() + seconds
        sel = selectors.DefaultSelector()
        try:
            sel.register(self.connection, selectors.EVENT_READ)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                if self._fake._closing.is_set():
                    raise ServerClosing
                if not sel.select(min(remaining, 0.05)):
                    continue
                try:
                    peek = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    peek = b""
                if not peek:
                    self._peer_gone(stats)
                    return False
                # The client sent more data (pipelining): stop polling, just sleep.
                if self._fake._closing.wait(max(0.0, deadline - time.monotonic())):
                    raise ServerClosing
                return True
        except (OSError, ValueError):
            self._peer_gone(stats)
            return False
        finally:
            sel.close()


def chain(first: Iterable[bytes], second: Iterable[bytes]) -> Iterator[bytes]:
    """``first``'s items, then ``second``'s."""
    yield from first
    yield from second
