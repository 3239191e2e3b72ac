"""A fake OpenAI-compatible upstream HTTP server for tests.

:class:`FakeUpstream` is a real HTTP/1.1 server (stdlib only: :mod:`http.server` in daemon
threads) bound to ``127.0.0.1`` on an OS-chosen port. It speaks the OpenAI wire format closely
enough for the official ``openai`` SDK and for gatewayd itself:

* ``POST {prefix}/chat/completions`` (plain and ``"stream": true`` SSE),
* ``POST {prefix}/completions`` (plain and streamed ``text_completion`` objects),
* ``POST {prefix}/embeddings`` (``float`` or ``base64`` encoding),
* ``GET {prefix}/models`` and ``GET {prefix}/models/{id}``,
* anything else: 404 with an OpenAI-shaped error body.

Every request is recorded as a :class:`RecordedRequest`. What the server does with each request
is scripted with *behaviours* (:class:`Reply`, :class:`Error`, :class:`Hang`, :class:`Reset`,
:class:`Stream`, ...): :meth:`FakeUpstream.enqueue` queues behaviours that are consumed one per
incoming request (FIFO, whatever the path); when the queue is empty the default behaviour
(:meth:`FakeUpstream.set_default`, normally ``Reply()``) applies. A behaviour may also be a
callable taking the :class:`RecordedRequest` and returning a behaviour, for answers that depend
on the request (e.g. on the model).

The server is synchronous and thread-based on purpose: tests drive it from plain pytest code
while the gateway under test runs in a separate process (or its own reactor).

Typical pytest use::

    import pytest
    from gatewayd.testing import Error, FakeUpstream, Reply

    @pytest.fixture
    def upstream() -> Iterator[FakeUpstream]:
        with FakeUpstream() as server:
            yield server

    def test_retry(upstream: FakeUpstream) -> None:
        upstream.enqueue(Error(503, headers={"Retry-After": "0"}), Reply("second try"))
        ...  # point the gateway (or openai.OpenAI(base_url=upstream.url)) at upstream.url
        assert upstream.count("/chat/completions") == 2

All waits are bounded: :meth:`FakeUpstream.close` wakes hanging and sleeping handlers, shuts
down every open connection and joins the handler threads with a timeout.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import TracebackType

from gatewayd.testing.behaviours import (
    _BEHAVIOUR_TYPES,
    _HOST,
    DEFAULT_CONTENT,
    DEFAULT_MODELS,
    Behaviour,
    BehaviourLike,
    ContextLengthError,
    Error,
    Hang,
    NonJSON,
    RawResponse,
    RecordedRequest,
    Reply,
    Reset,
    SSEFramingStream,
    Stream,
    StreamStats,
    StreamThenCut,
    closed_port,
)
from gatewayd.testing.served import ServedFake
from gatewayd.testing.server import (
    _Server,
)

__all__ = [
    "DEFAULT_CONTENT",
    "DEFAULT_MODELS",
    "Behaviour",
    "BehaviourLike",
    "ContextLengthError",
    "Error",
    "FakeUpstream",
    "Hang",
    "NonJSON",
    "RawResponse",
    "RecordedRequest",
    "Reply",
    "Reset",
    "SSEFramingStream",
    "Stream",
    "StreamStats",
    "StreamThenCut",
    "closed_port",
]


class FakeUpstream(ServedFake):
    """A fake OpenAI-compatible upstream server (see the module docstring).

    ``prefix`` is the path prefix of the API (``"/v1"``; ``""`` or e.g.
    ``"/openai/deployments/gpt4"`` also work). ``default`` is the behaviour used when the queue
    is empty (``Reply()``), ``content`` the default assistant content, ``models`` the ids
    listed by ``GET {prefix}/models`` and ``embedding_dim`` the embedding size used unless the
    request sets ``dimensions``.

    Constructing the object starts nothing; :meth:`start` binds 127.0.0.1 on a free port and
    serves from daemon threads; :meth:`close` stops it. It is also a context manager.
    """

    def __init__(
        self,
        *,
        prefix: str = "/v1",
        default: BehaviourLike | None = None,
        content: str = DEFAULT_CONTENT,
        models: Sequence[str] = DEFAULT_MODELS,
        embedding_dim: int = 8,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"prefix must be empty or start (and not end) with '/': {prefix!r}")
        self.prefix = prefix
        self.content = content
        self.models: list[str] = list(models)
        self.embedding_dim = embedding_dim
        #: Serve HTTPS with this server context (see :mod:`gatewayd.testing.tlsfiles`).
        self.tls = tls
        self._default: BehaviourLike = Reply() if default is None else default
        self._lock = threading.Condition(threading.Lock())
        self._queue: deque[BehaviourLike] = deque()
        self._requests: list[RecordedRequest] = []
        self._stream_stats: list[StreamStats] = []
        self._handler_errors: list[str] = []
        self._connections_opened = 0
        self._open: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._connection_ids: dict[int, int] = {}
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeUpstream:
        """Bind 127.0.0.1 on an OS-chosen port and serve in a daemon thread; return self."""
        if self._server is not None or self._closed:
            raise RuntimeError("FakeUpstream can only be started once")
        self._server = _Server(self)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-upstream-{self.port}",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving: wake hanging handlers, close every connection, join threads.

        Waits at most about ``timeout`` seconds in total; idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        deadline = time.monotonic() + timeout
        server = self._server
        if server is None:
            return
        server.shutdown()  # returns within one poll interval
        server.server_close()
        with self._lock:
            open_now = list(self._open.values())
        for sock, _thread in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _sock, thread in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._serve_thread is not None:
            self._serve_thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        """The address the server listens on (always ``"127.0.0.1"``)."""
        return _HOST

    @property
    def port(self) -> int:
        """The port the server listens on (only once started)."""
        if self._server is None:
            raise RuntimeError("FakeUpstream is not started")
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with ``tls``) without the prefix."""
        return f"{'https' if self.tls else 'http'}://{_HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL including the prefix, e.g. ``http://127.0.0.1:54321/v1``."""
        return self.origin + self.prefix

    # ------------------------------------------------------------------ scripting

    def enqueue(self, *behaviours: BehaviourLike) -> None:
        """Queue behaviours, consumed one per incoming request in FIFO order."""
        for behaviour in behaviours:
            _check_behaviour(behaviour)
        with self._lock:
            self._queue.extend(behaviours)

    def set_default(self, behaviour: BehaviourLike) -> None:
        """Set the behaviour used when the queue is empty."""
        _check_behaviour(behaviour)
        with self._lock:
            self._default = behaviour

    @property
    def pending(self) -> int:
        """How many queued behaviours have not been consumed yet."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget recorded requests, stream stats and queued behaviours; default to Reply()."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._stream_stats.clear()
            self._default = Reply()

    # ------------------------------------------------------------------ inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the list of recorded requests, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        """The most recent request (raises :class:`IndexError` if there is none)."""
        with self._lock:
            return self._requests[-1]

    def count(self, path_suffix: str | None = None) -> int:
        """Count recorded requests, only those whose path (sans query) ends with the suffix."""
        with self._lock:
            if path_suffix is None:
                return len(self._requests)
            return sum(1 for r in self._requests if r.bare_path.endswith(path_suffix))

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Wait until at least ``n`` requests were recorded; return them.

        Raises :class:`TimeoutError` after ``timeout`` seconds.
        """
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} request(s) within {timeout}s, got {len(self._requests)}"
                )
            return list(self._requests)

    @property
    def stream_stats(self) -> list[StreamStats]:
        """The live :class:`StreamStats` of every SSE response so far, in start order."""
        with self._lock:
            return list(self._stream_stats)

    def wait_for_streams(self, n: int, timeout: float = 5.0) -> list[StreamStats]:
        """Wait until at least ``n`` SSE responses have started; return their stats."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._stream_stats) >= n, timeout):
                raise TimeoutError(
                    f"expected {n} stream(s) within {timeout}s, got {len(self._stream_stats)}"
                )
            return list(self._stream_stats)

    @property
    def connections_opened(self) -> int:
        """How many TCP connections the server has accepted so far."""
        with self._lock:
            return self._connections_opened

    @property
    def open_connections(self) -> int:
        """How many accepted connections are still open."""
        with self._lock:
            return len(self._open)

    @property
    def handler_errors(self) -> list[str]:
        """Tracebacks of unexpected handler exceptions (bugs), for tests to assert empty."""
        return list(self._handler_errors)

    # ------------------------------------------------------------------ internals

    def _register_connection(self, sock: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections_opened += 1
            self._open[id(sock)] = (sock, thread)
            self._connection_ids[id(sock)] = self._connections_opened

    def _unregister_connection(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(id(sock), None)
            self._connection_ids.pop(id(sock), None)

    def _record(
        self,
        method: str,
        path: str,
        raw_headers: tuple[tuple[str, str], ...],
        body: bytes,
        connection_id: int,
    ) -> RecordedRequest:
        headers: dict[str, str] = {}
        for name, value in raw_headers:
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        with self._lock:
            record = RecordedRequest(
                method=method,
                path=path,
                headers=headers,
                raw_headers=raw_headers,
                body=body,
                connection_id=connection_id,
                index=len(self._requests),
                received_at=time.monotonic(),
            )
            self._requests.append(record)
            self._lock.notify_all()
        return record

    def _next_behaviour(self, record: RecordedRequest) -> Behaviour:
        with self._lock:
            chosen = self._queue.popleft() if self._queue else self._default
        if isinstance(chosen, _BEHAVIOUR_TYPES):
            return chosen
        result = chosen(record)
        if not isinstance(result, _BEHAVIOUR_TYPES):
            raise TypeError(f"behaviour function returned {result!r}, not a behaviour")
        return result

    def _new_stream_stats(self, record: RecordedRequest) -> StreamStats:
        stats = StreamStats(
            request_index=record.index, path=record.path, started_at=time.monotonic()
        )
        with self._lock:
            self._stream_stats.append(stats)
            self._lock.notify_all()
        return stats


def _check_behaviour(behaviour: object) -> None:
    if not isinstance(behaviour, _BEHAVIOUR_TYPES) and not callable(behaviour):
        raise TypeError(f"not a FakeUpstream behaviour: {behaviour!r}")
