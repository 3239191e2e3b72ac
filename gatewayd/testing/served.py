"""What the fake upstream's HTTP server needs of the fake it serves.

:class:`~gatewayd.testing.upstream.FakeUpstream` implements it; the server
(:mod:`gatewayd.testing.server`) is written against this base, so the two modules do
not import each other."""

from __future__ import annotations

import socket
import ssl
import threading
from abc import ABC, abstractmethod

from gatewayd.testing.behaviours import Behaviour, RecordedRequest, StreamStats
from gatewayd.testing.openai_wire import OpenAIWire


class ServedFake(OpenAIWire, ABC):
    """The fake's state and hooks that its server's connection handlers use."""

    prefix: str
    content: str
    models: list[str]
    tls: ssl.SSLContext | None
    _handler_errors: list[str]
    _connection_ids: dict[int, int]
    _closing: threading.Event

    @abstractmethod
    def _register_connection(self, sock: socket.socket, thread: threading.Thread) -> None:
        """A connection was accepted and is served by ``thread``."""

    @abstractmethod
    def _unregister_connection(self, sock: socket.socket) -> None:
        """A connection closed."""

    @abstractmethod
    def _record(
        self,
        method: str,
        path: str,
        raw_headers: tuple[tuple[str, str], ...],
        body: bytes,
        connection_id: int,
    ) -> RecordedRequest:
        """Keep a received request for the test to inspect; return its record."""

    @abstractmethod
    def _next_behaviour(self, record: RecordedRequest) -> Behaviour:
        """What to do with ``record``: the next queued behaviour, or the default."""

    @abstractmethod
    def _new_stream_stats(self, record: RecordedRequest) -> StreamStats:
        """The statistics of a stream that starts answering ``record``."""
