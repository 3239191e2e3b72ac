"""The HTTP server and request handler behind :class:`~gatewayd.testing.upstream.FakeUpstream`."""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import sys
import threading
import traceback
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from gatewayd.testing.behaviours import (
    _BAD_JSON_MESSAGE,
    _HOST,
    _SSE_DONE,
    Behaviour,
    Error,
    Hang,
    NonJSON,
    RawResponse,
    RecordedRequest,
    Reply,
    Reset,
    SSEFramingStream,
    Stream,
    StreamThenCut,
    _default_error_type,
    _dumps,
    _error_body,
    _split_words,
)
from gatewayd.testing.served import ServedFake
from gatewayd.testing.sse_replies import ServerClosing, SSEReplies, chain

# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks connections and threads for :class:`FakeUpstream`."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, fake: ServedFake) -> None:
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
            if self.fake.tls is not None:
                # The handshake runs in the connection's thread; a failed one (an
                # untrusted or missing client certificate) is an OSError: ignored.
                sock.settimeout(10)
                sock = self.fake.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
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
        if isinstance(exc, (OSError, ServerClosing)):
            return  # peer went away or we are closing: not interesting
        text = traceback.format_exc()
        self.fake._handler_errors.append(text)
        sys.stderr.write(f"FakeUpstream handler error:\n{text}")


class _Handler(SSEReplies, BaseHTTPRequestHandler):
    """Request handler: reads and records each request, then applies the next behaviour."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-openai-upstream/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    _request_id = ""

    @property
    def _fake(self) -> ServedFake:
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
        except (OSError, ServerClosing):
            self.close_connection = True

    def _connection_id(self) -> int:
        return self._fake._connection_ids.get(id(self.connection), 0)

    # ---------------------------------------------------------------- behaviours

    def _apply(self, behaviour: Behaviour, record: RecordedRequest) -> None:
        fake = self._fake
        if isinstance(behaviour, Reply):
            if behaviour.delay > 0 and fake._closing.wait(behaviour.delay):
                raise ServerClosing
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
            for event in chain(events, [_SSE_DONE]):
                if not self._write_chunk(stats, event):
                    return
            self._end_chunks(stats)
        else:
            obj = fake._completion_object(endpoint, request, model, content, reply.finish_reason)
            self._send_json(200, obj, extra)

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
