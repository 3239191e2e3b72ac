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

import base64
import hashlib
import json
import re
import selectors
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, TypeAlias, cast
from urllib.parse import parse_qs, urlsplit

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

#: Assistant content used when neither the behaviour nor the server overrides it.
DEFAULT_CONTENT: Final = "Hello from fake upstream"
#: Model ids listed by ``GET {prefix}/models`` unless the server is given others.
DEFAULT_MODELS: Final = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
#: ``system_fingerprint`` put in chat and completion responses.
SYSTEM_FINGERPRINT: Final = "fp_fake_upstream"
#: Unknown extra field added to chat/completion responses, to test pass-through.
EXTRA_FIELD: Final = "x_fake_extra"

_HOST: Final = "127.0.0.1"
_MODEL_CREATED: Final = 1_700_000_000
_CONTEXT_LENGTH_MESSAGE: Final = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted in "
    "9000 tokens. Please reduce the length of the messages."
)
_BAD_JSON_MESSAGE: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


# --------------------------------------------------------------------------------------------
# Behaviours
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Answer normally: a JSON object, or an SSE stream if the request asked for ``stream``.

    ``content`` overrides the server's assistant content for this reply, ``delay`` sleeps that
    many seconds before sending the response headers, ``headers`` are added to (or override)
    the response headers and ``finish_reason`` is reported in the choice.
    """

    content: str | None = None
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Error:
    """Answer with an OpenAI-shaped error: ``{"error": {message, type, param, code}}``.

    ``type`` defaults from the status (400 ``invalid_request_error``, 401
    ``authentication_error``, 403 ``permission_error``, 404 ``not_found_error``, 429
    ``rate_limit_error``, 5xx ``server_error``). ``headers`` are added to the response (e.g.
    ``{"Retry-After": "2"}`` or ``{"retry-after-ms": "150"}``). ``body``, when given, replaces
    the whole body (e.g. an HTML 502 page); its Content-Type is then ``text/html`` unless
    ``headers`` sets one.
    """

    status: int
    message: str = "The fake upstream was scripted to fail this request."
    type: str | None = None
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class ContextLengthError(Error):
    """OpenAI's 400 ``context_length_exceeded`` error, with its real message text."""

    status: int = 400
    message: str = _CONTEXT_LENGTH_MESSAGE
    type: str | None = "invalid_request_error"
    code: str | None = "context_length_exceeded"
    param: str | None = "messages"


@dataclass(frozen=True)
class Hang:
    """Read the request, send nothing for ``seconds``, then close the connection (FIN).

    :meth:`FakeUpstream.close` wakes a hanging handler at once.
    """

    seconds: float


@dataclass(frozen=True)
class Reset:
    """Read the request, then reset the connection (RST, ``SO_LINGER`` 0) before any byte."""


@dataclass(frozen=True)
class StreamThenCut:
    """Start a normal 200 SSE stream, send ``events`` data events, then reset the connection.

    The events are the ones a streamed :class:`Reply` would send (the role chunk first, then one
    chunk per word, ...); neither ``[DONE]`` nor the terminating HTTP chunk is ever sent. The
    stream is sent whatever the request's ``stream`` flag.
    """

    events: int


@dataclass(frozen=True)
class NonJSON:
    """Answer ``status`` with ``Content-Type: application/json`` but an HTML body.

    The body is ``<html>oops</html>``.
    """

    status: int = 200


@dataclass(frozen=True)
class Stream:
    """A controlled 200 SSE stream, sent whatever the request's ``stream`` flag.

    The stream is: a role chunk, ``events`` content chunks (default: one per word of
    ``content`` or the server's content; words are cycled if ``events`` is larger), a chunk with
    ``finish_reason``, a usage chunk if the request set ``stream_options.include_usage``, then
    ``data: [DONE]`` if ``done``; the chunked body is always terminated properly. Headers are
    sent at once; ``first_byte_delay`` is slept before the first event and ``interval`` before
    each later one (peer closes are noticed during these sleeps). ``event_size`` pads each
    content piece to that many characters (for multi-megabyte backpressure tests). ``sndbuf``
    sets the socket's ``SO_SNDBUF`` (None leaves the OS default) so that blocked writes show up
    in :attr:`FakeUpstream.stream_stats`.
    """

    events: int | None = None
    interval: float = 0.0
    first_byte_delay: float = 0.0
    event_size: int = 0
    done: bool = True
    content: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    sndbuf: int | None = 64 * 1024


@dataclass(frozen=True)
class RawResponse:
    """Write exactly ``data`` as the response; then close the connection if ``close``."""

    data: bytes
    close: bool = True


@dataclass(frozen=True)
class SSEFramingStream:
    """A 200 ``text/event-stream`` response whose body is ``pieces``, each its own HTTP chunk.

    Use it to split events across reads, merge events, use ``\\r\\n`` line endings, comments
    and ``event:`` lines. ``interval`` is slept between pieces. Empty pieces are skipped (an
    empty HTTP chunk would end the body); the terminating chunk is sent after the last piece.
    """

    pieces: Sequence[bytes]
    interval: float = 0.0


#: Every scripted behaviour.
Behaviour: TypeAlias = (
    Reply | Error | Hang | Reset | StreamThenCut | NonJSON | Stream | RawResponse | SSEFramingStream
)
#: A behaviour, or a function choosing one from the recorded request.
BehaviourLike: TypeAlias = Behaviour | Callable[["RecordedRequest"], Behaviour]

_BEHAVIOUR_TYPES: Final = (
    Reply,
    Error,
    Hang,
    Reset,
    StreamThenCut,
    NonJSON,
    Stream,
    RawResponse,
    SSEFramingStream,
)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received by the fake upstream.

    ``path`` includes the query string; ``headers`` maps lower-cased names to values (repeated
    headers joined with ``", "``); ``raw_headers`` keeps names, order and repeats as sent.
    ``connection_id`` numbers the TCP connection (1, 2, ...) the request arrived on, ``index``
    is its position in :attr:`FakeUpstream.requests` and ``received_at`` a
    :func:`time.monotonic` timestamp.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    raw_headers: tuple[tuple[str, str], ...]
    body: bytes
    connection_id: int = 0
    index: int = 0
    received_at: float = 0.0

    @property
    def bare_path(self) -> str:
        """The path without its query string."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string parsed with :func:`urllib.parse.parse_qs`."""
        return parse_qs(urlsplit(self.path).query)

    def json(self) -> Any:
        """Decode the body as JSON (raises :class:`ValueError` if it is not JSON)."""
        return json.loads(self.body)


@dataclass
class StreamStats:
    """Live progress of one SSE response written by the fake upstream.

    The handler thread updates the object while it writes, so tests can poll it.
    ``bytes_written`` counts body bytes accepted by the kernel (chunk framing included, headers
    excluded) and only grows after a whole chunk was sent, so it stalls while the peer does not
    read; ``events_written`` counts body chunks. ``finished`` is set once the terminating
    chunk was sent. ``client_closed`` is set when a write failed with a broken pipe/reset or
    the peer's close was seen while idle, ``closed_at`` being the :func:`time.monotonic` time
    that was noticed.
    """

    request_index: int
    path: str
    started_at: float
    bytes_written: int = 0
    events_written: int = 0
    finished: bool = False
    client_closed: bool = False
    closed_at: float | None = None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def closed_port() -> int:
    """Return a 127.0.0.1 TCP port with nothing listening (for connection-refused tests).

    The port is bound, read and released, so it is free unless something grabs it meanwhile.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _sse(obj: object) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


_SSE_DONE: Final = b"data: [DONE]\n\n"


def _default_error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def _count_tokens(value: object) -> int:
    """A crude token count: words in strings, items in token arrays, recursively."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, int):
        return 1
    if isinstance(value, Mapping):
        if "content" in value:
            return _count_tokens(value["content"])
        if "text" in value:
            return _count_tokens(value["text"])
        return 0
    if isinstance(value, list):
        return sum(_count_tokens(item) for item in value)
    return 0


def _split_words(content: str) -> list[str]:
    """Split content into pieces that concatenate back to it exactly (one per word)."""
    pieces = re.findall(r"\s*\S+", content)
    rest = content[len("".join(pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class _ServerClosing(Exception):
    """Raised inside a handler when the server is shutting down."""


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks connections and threads for :class:`FakeUpstream`."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, fake: FakeUpstream) -> None:
        self.fake = fake
        super().__init__((_HOST, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), which may block on DNS: skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        sock = cast(socket.socket, request)
        if self.fake._closing.is_set():
            self.shutdown_request(sock)
            return
        thread = threading.Thread(
            target=self._serve_connection,
            args=(sock, client_address),
            name="fake-upstream-connection",
            daemon=True,
        )
        self.fake._register_connection(sock, thread)
        thread.start()

    def _serve_connection(self, sock: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(sock, client_address)
        except Exception:
            self.handle_error(sock, client_address)
        finally:
            self.shutdown_request(sock)
            self.fake._unregister_connection(sock)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, _ServerClosing)):
            return  # peer went away or we are closing: not interesting
        text = traceback.format_exc()
        self.fake._handler_errors.append(text)
        sys.stderr.write(f"FakeUpstream handler error:\n{text}")


class _Handler(BaseHTTPRequestHandler):
    """Request handler: reads and records each request, then applies the next behaviour."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-openai-upstream/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    _request_id = ""

    @property
    def _fake(self) -> FakeUpstream:
        return cast(_Server, self.server).fake

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default per-request logging to stderr."""

    # Every method goes through the same dispatcher (routing decides what is allowed).
    def do_GET(self) -> None:
        """Handle any request method."""
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    # ---------------------------------------------------------------- request side

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("EOF in chunked request body")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                data = self.rfile.read(size)
                if len(data) != size:
                    raise ConnectionError("EOF in chunked request body")
                parts.append(data)
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length > 0 else b""
        if len(data) != length:
            raise ConnectionError("EOF in request body")
        return data

    def _dispatch(self) -> None:
        fake = self._fake
        self._request_id = "req_" + uuid.uuid4().hex
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        raw = tuple((str(k), str(v)) for k, v in self.headers.items())
        record = fake._record(self.command, self.path, raw, body, self._connection_id())
        try:
            self._apply(fake._next_behaviour(record), record)
        except (OSError, _ServerClosing):
            self.close_connection = True

    def _connection_id(self) -> int:
        return self._fake._connection_ids.get(id(self.connection), 0)

    # ---------------------------------------------------------------- behaviours

    def _apply(self, behaviour: Behaviour, record: RecordedRequest) -> None:
        fake = self._fake
        if isinstance(behaviour, Reply):
            if behaviour.delay > 0 and fake._closing.wait(behaviour.delay):
                raise _ServerClosing
            self._reply(record, behaviour)
        elif isinstance(behaviour, Error):
            self._send_error_behaviour(behaviour)
        elif isinstance(behaviour, Hang):
            fake._closing.wait(max(0.0, behaviour.seconds))
            self.close_connection = True
        elif isinstance(behaviour, Reset):
            self._abort()
        elif isinstance(behaviour, StreamThenCut):
            self._stream_then_cut(record, behaviour)
        elif isinstance(behaviour, NonJSON):
            self._send_full(behaviour.status, b"<html>oops</html>", "application/json")
        elif isinstance(behaviour, Stream):
            self._controlled_stream(record, behaviour)
        elif isinstance(behaviour, RawResponse):
            self.connection.sendall(behaviour.data)
            if behaviour.close:
                self.close_connection = True
        elif isinstance(behaviour, SSEFramingStream):
            self._framing_stream(record, behaviour)
        else:  # pragma: no cover - guarded by _next_behaviour
            raise TypeError(f"not a FakeUpstream behaviour: {behaviour!r}")

    def _send_error_behaviour(self, err: Error) -> None:
        if err.body is not None:
            has_type = any(k.lower() == "content-type" for k in err.headers)
            ctype = None if has_type else "text/html; charset=utf-8"
            self._send_full(err.status, err.body, ctype, err.headers)
            return
        body = _error_body(
            err.message, err.type or _default_error_type(err.status), err.param, err.code
        )
        self._send_full(err.status, body, "application/json", err.headers)

    def _abort(self) -> None:
        """Close the connection abruptly: SO_LINGER 0 makes close() send a RST."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        try:
            self.rfile.close()  # drop the makefile() reference so close() really closes
        except OSError:
            pass
        sock.close()

    # ---------------------------------------------------------------- normal replies

    def _route(self, record: RecordedRequest) -> tuple[str | None, str]:
        """Map the request path to an endpoint name (or None) and the rest of the path."""
        prefix = self._fake.prefix
        path = record.bare_path
        if not path.startswith(prefix + "/"):
            return None, ""
        rest = path[len(prefix) :]
        if rest == "/chat/completions":
            return "chat", ""
        if rest == "/completions":
            return "completions", ""
        if rest == "/embeddings":
            return "embeddings", ""
        if rest == "/models":
            return "models", ""
        if rest.startswith("/models/") and len(rest) > len("/models/"):
            return "model", rest[len("/models/") :]
        return None, ""

    def _reply(self, record: RecordedRequest, reply: Reply) -> None:
        fake = self._fake
        endpoint, arg = self._route(record)
        method = self.command
        extra = reply.headers
        if endpoint is None:
            message = f"Invalid URL ({method} {record.bare_path})"
            body = _error_body(message, "invalid_request_error")
            self._send_full(404, body, "application/json", extra)
            return
        wanted = "GET" if endpoint in ("models", "model") else "POST"
        if method != wanted and not (wanted == "GET" and method == "HEAD"):
            message = f"Invalid method for URL ({method} {record.bare_path})"
            body = _error_body(message, "invalid_request_error")
            self._send_full(405, body, "application/json", extra)
            return
        if endpoint == "models":
            data = [fake._model_object(m) for m in fake.models]
            self._send_json(200, {"object": "list", "data": data}, extra)
            return
        if endpoint == "model":
            if arg in fake.models:
                self._send_json(200, fake._model_object(arg), extra)
            else:
                message = f"The model '{arg}' does not exist"
                body = _error_body(message, "invalid_request_error", "model", "model_not_found")
                self._send_full(404, body, "application/json", extra)
            return
        try:
            request = json.loads(record.body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            body = _error_body(_BAD_JSON_MESSAGE, "invalid_request_error")
            self._send_full(400, body, "application/json", extra)
            return
        model = request.get("model")
        if not isinstance(model, str) or not model:
            message = "you must provide a model parameter"
            self._send_full(400, _error_body(message, "invalid_request_error"), "application/json")
            return
        content = fake.content if reply.content is None else reply.content
        if endpoint == "embeddings":
            self._send_json(200, fake._embeddings_object(request, model), extra)
        elif request.get("stream") is True:
            stats = self._start_sse(record, extra)
            events = fake._stream_events(
                endpoint, request, model, _split_words(content), reply.finish_reason
            )
            for event in _chain(events, [_SSE_DONE]):
                if not self._write_chunk(stats, event):
                    return
            self._end_chunks(stats)
        else:
            obj = fake._completion_object(endpoint, request, model, content, reply.finish_reason)
            self._send_json(200, obj, extra)

    # ---------------------------------------------------------------- streams

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
            events = _chain(events, [_SSE_DONE])
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
            raise _ServerClosing
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
                    raise _ServerClosing
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
                    raise _ServerClosing
                return True
        except (OSError, ValueError):
            self._peer_gone(stats)
            return False
        finally:
            sel.close()

    # ---------------------------------------------------------------- low-level output

    def _emit_head(
        self, status: int, defaults: list[tuple[str, str]], extra: Mapping[str, str]
    ) -> None:
        overridden = {k.lower() for k in extra}
        self.send_response(status)
        for name, value in defaults:
            if name.lower() not in overridden:
                self.send_header(name, value)
        for name, value in extra.items():
            self.send_header(name, value)
        if self.close_connection and "connection" not in overridden:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_full(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        defaults: list[tuple[str, str]] = []
        if content_type is not None:
            defaults.append(("Content-Type", content_type))
        defaults.append(("Content-Length", str(len(body))))
        defaults.append(("x-request-id", self._request_id))
        self._emit_head(status, defaults, extra or {})
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, status: int, obj: object, extra: Mapping[str, str]) -> None:
        self._send_full(status, _dumps(obj), "application/json", extra)


def _chain(first: Iterable[bytes], second: Iterable[bytes]) -> Iterator[bytes]:
    yield from first
    yield from second


class FakeUpstream:
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
    ) -> None:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"prefix must be empty or start (and not end) with '/': {prefix!r}")
        self.prefix = prefix
        self.content = content
        self.models: list[str] = list(models)
        self.embedding_dim = embedding_dim
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
        """``http://127.0.0.1:PORT`` without the prefix."""
        return f"http://{_HOST}:{self.port}"

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

    @staticmethod
    def embedding_for(item: str | Sequence[int], dim: int = 8) -> list[float]:
        """The deterministic embedding served for one input item.

        Values are multiples of 1/128 in [-1, 1), so they survive float32/base64 exactly.
        """
        key = item if isinstance(item, str) else json.dumps(list(item))
        digest = b""
        counter = 0
        while len(digest) < dim:
            digest += hashlib.sha256(f"{counter}:{key}".encode()).digest()
            counter += 1
        return [(b - 128) / 128 for b in digest[:dim]]

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

    @staticmethod
    def _lenient_json(record: RecordedRequest) -> dict[str, Any]:
        try:
            value = record.json()
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "fake"}

    def _completion_object(
        self,
        endpoint: str,
        request: Mapping[str, Any],
        model: str,
        content: str,
        finish_reason: str,
    ) -> dict[str, Any]:
        created = int(time.time())
        completion_tokens = len(_split_words(content))
        if endpoint == "chat":
            prompt_tokens = _count_tokens(request.get("messages"))
            return {
                "id": "chatcmpl-" + uuid.uuid4().hex[:24],
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": _usage(prompt_tokens, completion_tokens),
                "system_fingerprint": SYSTEM_FINGERPRINT,
                EXTRA_FIELD: {"kept": True},
            }
        prompt_tokens = _count_tokens(request.get("prompt"))
        return {
            "id": "cmpl-" + uuid.uuid4().hex[:24],
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"text": content, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": _usage(prompt_tokens, completion_tokens),
            "system_fingerprint": SYSTEM_FINGERPRINT,
            EXTRA_FIELD: {"kept": True},
        }

    def _stream_events(
        self,
        endpoint: str | None,
        request: Mapping[str, Any],
        model: str,
        pieces: Iterable[str],
        finish_reason: str,
    ) -> Iterator[bytes]:
        """Yield the SSE events (without ``[DONE]``) of a streamed chat or text completion."""
        options = request.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        created = int(time.time())
        text = endpoint == "completions"
        base: dict[str, Any] = {
            "id": ("cmpl-" if text else "chatcmpl-") + uuid.uuid4().hex[:24],
            "object": "text_completion" if text else "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

        def chunk(payload: Mapping[str, Any], finish: str | None) -> bytes:
            if text:
                choice = {"text": payload.get("content", ""), "index": 0, "logprobs": None}
            else:
                choice = {"index": 0, "delta": dict(payload), "logprobs": None}
            choice["finish_reason"] = finish
            obj = {**base, "choices": [choice]}
            if include_usage:
                obj["usage"] = None
            return _sse(obj)

        if not text:
            yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        completion_tokens = 0
        for piece in pieces:
            completion_tokens += 1
            yield chunk({"content": piece}, None)
        yield chunk({}, finish_reason)
        if include_usage:
            prompt = request.get("prompt") if text else request.get("messages")
            usage = _usage(_count_tokens(prompt), completion_tokens)
            yield _sse({**base, "choices": [], "usage": usage})

    def _embeddings_object(self, request: Mapping[str, Any], model: str) -> dict[str, Any]:
        raw_input = request.get("input")
        items: list[str | Sequence[int]]
        if isinstance(raw_input, str):
            items = [raw_input]
        elif (
            isinstance(raw_input, list) and raw_input and all(isinstance(x, int) for x in raw_input)
        ):
            items = [raw_input]
        elif isinstance(raw_input, list):
            items = [x if isinstance(x, (str, list)) else str(x) for x in raw_input]
        else:
            items = []
        dimensions = request.get("dimensions")
        dim = dimensions if isinstance(dimensions, int) and dimensions > 0 else self.embedding_dim
        as_base64 = request.get("encoding_format") == "base64"
        data: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            vector = self.embedding_for(item, dim)
            embedding: list[float] | str = vector
            if as_base64:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = _count_tokens(items)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _check_behaviour(behaviour: object) -> None:
    if not isinstance(behaviour, _BEHAVIOUR_TYPES) and not callable(behaviour):
        raise TypeError(f"not a FakeUpstream behaviour: {behaviour!r}")
