"""Tests of the fake OpenAI-compatible upstream in :mod:`gatewayd.testing.upstream`.

The server is driven with raw sockets, :mod:`http.client` and the official ``openai`` SDK
pointed straight at it. Plain synchronous tests: they work with and without pytest-twisted.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import openai
import pytest

from gatewayd.testing import (
    DEFAULT_CONTENT,
    DEFAULT_MODELS,
    ContextLengthError,
    Error,
    FakeUpstream,
    Hang,
    NonJSON,
    RawResponse,
    RecordedRequest,
    Reply,
    Reset,
    SSEFramingStream,
    Stream,
    StreamThenCut,
    closed_port,
)

CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hi there"}],
}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A started fake upstream; asserts no handler bugs surfaced."""
    with FakeUpstream() as server:
        yield server
        assert server.handler_errors == []


@pytest.fixture
def client(upstream: FakeUpstream) -> Iterator[openai.OpenAI]:
    """An openai SDK client pointed straight at the fake upstream, without retries."""
    with openai.OpenAI(base_url=upstream.url, api_key="x", max_retries=0, timeout=5.0) as sdk:
        yield sdk


# ---------------------------------------------------------------------------- helpers


def _connect(server: FakeUpstream, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5.0)
    sock.connect((server.host, server.port))
    return sock


def _raw_request(path: str, body: dict[str, Any] | None = None, method: str = "POST") -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: fake\r\nAuthorization: Bearer raw\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


def _read_head(stream: BinaryIO) -> tuple[int, dict[str, str]]:
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, str] = {}
    while True:
        line = stream.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def _read_chunks(stream: BinaryIO) -> tuple[list[bytes], bool]:
    """Read an HTTP chunked body; return (chunks, terminated properly)."""
    chunks: list[bytes] = []
    try:
        while True:
            size_line = stream.readline()
            if not size_line:
                return chunks, False
            size = int(size_line.strip(), 16)
            if size == 0:
                assert stream.readline() == b"\r\n"
                return chunks, True
            data = stream.read(size)
            if len(data) != size:
                return chunks, False
            chunks.append(data)
            assert stream.readline() == b"\r\n"
    except ConnectionError:
        return chunks, False


def _json_request(
    server: FakeUpstream, method: str, path: str, body: bytes | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5.0)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ---------------------------------------------------------------------------- chat


def test_chat_completion_via_sdk(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}]
    )
    assert response.id.startswith("chatcmpl-")
    assert response.object == "chat.completion"
    assert response.model == "gpt-4o-mini"
    assert response.system_fingerprint
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == DEFAULT_CONTENT
    assert choice.finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.prompt_tokens == 2
    assert response.usage.completion_tokens == 4
    assert response.usage.total_tokens == 6
    assert response.to_dict()["x_fake_extra"] == {"kept": True}

    [record] = upstream.requests
    assert record.method == "POST"
    assert record.path == "/v1/chat/completions"
    assert record.headers["authorization"] == "Bearer x"
    assert record.headers["content-type"].startswith("application/json")
    assert any(name.lower() == "authorization" for name, _ in record.raw_headers)
    assert record.json()["messages"] == [{"role": "user", "content": "hi there"}]
    assert record.connection_id == 1
    assert upstream.count() == 1
    assert upstream.count("/chat/completions") == 1
    assert upstream.count("/embeddings") == 0


def test_reply_content_headers_and_delay(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.enqueue(Reply("custom words", delay=0.2, headers={"x-upstream-extra": "yes"}))
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    assert time.monotonic() - started >= 0.2
    assert raw.headers["x-upstream-extra"] == "yes"
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.parse().choices[0].message.content == "custom words"


def test_chat_stream_via_sdk_with_usage(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_CONTENT
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 4
    [stats] = upstream.wait_for_streams(1)
    assert _wait_until(lambda: stats.finished, 2.0)
    assert not stats.client_closed


def test_chat_stream_without_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


def test_sse_wire_format_one_event_per_chunk(upstream: FakeUpstream) -> None:
    with _connect(upstream) as sock, sock.makefile("rb") as stream:
        sock.sendall(_raw_request("/v1/chat/completions", {**CHAT_BODY, "stream": True}))
        status, headers = _read_head(stream)
        chunks, terminated = _read_chunks(stream)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert terminated
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") for c in chunks)
    assert all(c.count(b"\n\n") == 1 for c in chunks)
    assert chunks[-1] == b"data: [DONE]\n\n"
    # role chunk + one per word + finish chunk + [DONE]
    assert len(chunks) == 1 + len(DEFAULT_CONTENT.split()) + 1 + 1
    final = json.loads(chunks[-2][len(b"data: ") :])
    assert final["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------------------- other endpoints


def test_embeddings_via_sdk_base64_default(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    response = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert upstream.last_request.json()["encoding_format"] == "base64"
    assert [d.index for d in response.data] == [0, 1]
    assert response.data[0].embedding == FakeUpstream.embedding_for("alpha")
    assert response.data[1].embedding == FakeUpstream.embedding_for("beta")
    assert response.model == "text-embedding-3-small"
    assert response.usage.prompt_tokens == 2


def test_embeddings_float_and_dimensions(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    response = client.embeddings.create(
        model="text-embedding-3-small", input="one two", encoding_format="float", dimensions=4
    )
    assert upstream.last_request.json()["encoding_format"] == "float"
    assert response.data[0].embedding == FakeUpstream.embedding_for("one two", 4)


def test_embeddings_base64_wire_format(upstream: FakeUpstream) -> None:
    body = {"model": "e", "input": "x", "encoding_format": "base64"}
    response, data = _json_request(upstream, "POST", "/v1/embeddings", json.dumps(body).encode())
    assert response.status == 200
    payload = json.loads(data)
    assert payload["object"] == "list"
    encoded = payload["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = list(struct.unpack("<8f", base64.b64decode(encoded)))
    assert decoded == FakeUpstream.embedding_for("x")


def test_models_via_sdk(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert [m.id for m in models] == list(DEFAULT_MODELS)
    assert all(m.object == "model" and m.owned_by == "fake" for m in models)
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope")
    assert info.value.code == "model_not_found"


def test_completions_via_sdk(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi")
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.choices[0].text == DEFAULT_CONTENT
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="say hi",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == DEFAULT_CONTENT
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert upstream.count("/completions") == 2  # /chat/completions does not end with it


# ---------------------------------------------------------------------------- errors


def test_error_with_retry_after_reaches_client(
    upstream: FakeUpstream, client: openai.OpenAI
) -> None:
    upstream.enqueue(Error(429, "slow down", headers={"Retry-After": "2"}))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "2"
    # The SDK unwraps the "error" member of the body.
    assert info.value.body == {
        "message": "slow down",
        "type": "rate_limit_error",
        "param": None,
        "code": None,
    }
    # The queue is consumed: the next request gets the default reply.
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert upstream.pending == 0


def test_context_length_error(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.enqueue(ContextLengthError())
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "context_length_exceeded"
    assert info.value.type == "invalid_request_error"
    assert "maximum context length" in info.value.message


def test_error_raw_body_override_and_nonjson(upstream: FakeUpstream) -> None:
    upstream.enqueue(Error(502, body=b"<html>Bad Gateway</html>"), NonJSON())
    response, data = _json_request(upstream, "POST", "/v1/chat/completions", b"{}")
    assert response.status == 502
    assert response.getheader("Content-Type", "").startswith("text/html")
    assert data == b"<html>Bad Gateway</html>"
    response, data = _json_request(upstream, "POST", "/v1/chat/completions", b"{}")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert data == b"<html>oops</html>"


def test_unknown_path_bad_json_and_wrong_method(upstream: FakeUpstream) -> None:
    response, data = _json_request(upstream, "POST", "/v1/nope", b"{}")
    assert response.status == 404
    error = json.loads(data)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    response, data = _json_request(upstream, "POST", "/v1/chat/completions", b"not json")
    assert response.status == 400
    assert json.loads(data)["error"]["type"] == "invalid_request_error"
    response, data = _json_request(upstream, "GET", "/v1/chat/completions")
    assert response.status == 405
    response, data = _json_request(upstream, "POST", "/v1/chat/completions", b'{"messages": []}')
    assert response.status == 400
    assert "model" in json.loads(data)["error"]["message"]


# ---------------------------------------------------------------------------- network faults


def test_hang_times_out_at_client_and_close_is_prompt() -> None:
    server = FakeUpstream().start()
    try:
        server.enqueue(Hang(30.0))
        with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=0.3) as sdk:
            with pytest.raises(openai.APITimeoutError):
                sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        server.wait_for_requests(1, timeout=2.0)
    finally:
        started = time.monotonic()
        server.close()
        assert time.monotonic() - started < 2.0


def test_hang_then_close_connection(upstream: FakeUpstream) -> None:
    upstream.enqueue(Hang(0.2))
    conn = http.client.HTTPConnection(upstream.host, upstream.port, timeout=5.0)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(CHAT_BODY))
        with pytest.raises(http.client.RemoteDisconnected):
            conn.getresponse()
    finally:
        conn.close()


def test_reset_gives_connection_error(upstream: FakeUpstream, client: openai.OpenAI) -> None:
    upstream.enqueue(Reset(), Reset())
    conn = http.client.HTTPConnection(upstream.host, upstream.port, timeout=5.0)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(CHAT_BODY))
        with pytest.raises(ConnectionResetError):
            conn.getresponse()
    finally:
        conn.close()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert upstream.count() == 2


def test_stream_then_cut_truncates(upstream: FakeUpstream) -> None:
    upstream.enqueue(StreamThenCut(3))
    with _connect(upstream) as sock, sock.makefile("rb") as stream:
        sock.sendall(_raw_request("/v1/chat/completions", {**CHAT_BODY, "stream": True}))
        status, _ = _read_head(stream)
        chunks, terminated = _read_chunks(stream)
    assert status == 200
    assert not terminated
    assert len(chunks) == 3
    assert b"[DONE]" not in b"".join(chunks)


def test_closed_port_refuses_connections() -> None:
    port = closed_port()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.settimeout(2.0)
        sock.connect(("127.0.0.1", port))


# ---------------------------------------------------------------------------- streams


def test_stream_backpressure_and_client_close(upstream: FakeUpstream) -> None:
    event_size = 64 * 1024
    events = 200  # ~13 MB in total
    upstream.enqueue(Stream(events=events, event_size=event_size))
    sock = _connect(upstream, rcvbuf=32 * 1024)
    try:
        sock.sendall(_raw_request("/v1/chat/completions", {**CHAT_BODY, "stream": True}))
        [stats] = upstream.wait_for_streams(1, timeout=2.0)
        time.sleep(0.5)  # read nothing: the writer fills the buffers and blocks
        first = stats.bytes_written
        time.sleep(0.5)
        assert stats.bytes_written == first, "writes should be blocked"
        assert 0 < first < events * event_size // 10
        assert not stats.finished and not stats.client_closed
    finally:
        closed = time.monotonic()
        sock.close()
    assert _wait_until(lambda: stats.client_closed, 2.0)
    assert stats.closed_at is not None
    assert stats.closed_at - closed < 1.0
    assert not stats.finished


def test_stream_notices_close_while_idle(upstream: FakeUpstream) -> None:
    upstream.enqueue(Stream(events=100, interval=0.2))
    with _connect(upstream) as sock, sock.makefile("rb") as stream:
        sock.sendall(_raw_request("/v1/chat/completions", {**CHAT_BODY, "stream": True}))
        _read_head(stream)
        stream.readline()  # first chunk size line
        [stats] = upstream.wait_for_streams(1)
    closed = time.monotonic()
    assert _wait_until(lambda: stats.client_closed, 2.0)
    assert stats.closed_at is not None and stats.closed_at - closed < 0.5
    assert stats.events_written < 10


def test_stream_controls(upstream: FakeUpstream) -> None:
    upstream.enqueue(
        Stream(events=6, interval=0.01, first_byte_delay=0.2, done=False, content="a b"),
        Stream(events=2, event_size=100),
    )
    with _connect(upstream) as sock, sock.makefile("rb") as stream:
        sent = time.monotonic()
        # Sent as a non-streaming request: Stream streams anyway.
        sock.sendall(_raw_request("/v1/chat/completions", CHAT_BODY))
        status, _ = _read_head(stream)
        chunks, terminated = _read_chunks(stream)
        assert time.monotonic() - sent >= 0.2
        assert status == 200 and terminated
        assert len(chunks) == 1 + 6 + 1  # role, 6 content chunks, finish; no [DONE]
        texts = [json.loads(c[6:])["choices"][0]["delta"].get("content") for c in chunks]
        assert "".join(t or "" for t in texts) == "a ba ba b"
        # Keep-alive: second request on the same connection.
        sock.sendall(_raw_request("/v1/chat/completions", CHAT_BODY))
        _read_head(stream)
        chunks, terminated = _read_chunks(stream)
    assert terminated and chunks[-1] == b"data: [DONE]\n\n"
    assert len(json.loads(chunks[1][6:])["choices"][0]["delta"]["content"]) == 100
    assert upstream.connections_opened == 1


def test_sse_framing_stream_and_raw_response(upstream: FakeUpstream) -> None:
    event = b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
    pieces = [
        event[:20],
        event[20:] + b'"choices":[]}\r\n\r\n: a comment\n\nevent: ping\n',
        b"data: {}\n\ndata: [DONE]\n\n",
    ]
    upstream.enqueue(SSEFramingStream(pieces, interval=0.01))
    with _connect(upstream) as sock, sock.makefile("rb") as stream:
        sock.sendall(_raw_request("/v1/chat/completions", CHAT_BODY))
        _read_head(stream)
        chunks, terminated = _read_chunks(stream)
    assert terminated and chunks == pieces

    upstream.enqueue(RawResponse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    response, data = _json_request(upstream, "GET", "/anything")
    assert (response.status, data) == (200, b"ok")


# ---------------------------------------------------------------------------- scripting, misc


def test_enqueue_fifo_default_and_callables(upstream: FakeUpstream) -> None:
    def by_model(request: RecordedRequest) -> Error | Reply:
        return Error(503) if request.json().get("model") == "down" else Reply("up")

    upstream.enqueue(Error(500), Reply("second"))
    upstream.set_default(by_model)
    body = json.dumps(CHAT_BODY).encode()
    statuses = [_json_request(upstream, "POST", "/v1/chat/completions", body) for _ in range(3)]
    assert [r.status for r, _ in statuses] == [500, 200, 200]
    assert json.loads(statuses[1][1])["choices"][0]["message"]["content"] == "second"
    assert json.loads(statuses[2][1])["choices"][0]["message"]["content"] == "up"
    down = json.dumps({**CHAT_BODY, "model": "down"}).encode()
    response, data = _json_request(upstream, "POST", "/v1/chat/completions", down)
    assert response.status == 503
    assert json.loads(data)["error"]["type"] == "server_error"
    assert len(upstream.wait_for_requests(4, timeout=1.0)) == 4
    with pytest.raises(TimeoutError):
        upstream.wait_for_requests(5, timeout=0.1)
    upstream.reset()
    assert upstream.requests == [] and upstream.pending == 0


def test_connections_opened_counts_keep_alive(upstream: FakeUpstream) -> None:
    body = json.dumps(CHAT_BODY)
    stream_body = json.dumps({**CHAT_BODY, "stream": True})
    conn = http.client.HTTPConnection(upstream.host, upstream.port, timeout=5.0)
    try:
        for payload in (body, stream_body, body):
            conn.request("POST", "/v1/chat/completions", body=payload)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        conn.request("GET", "/v1/models")
        conn.getresponse().read()
    finally:
        conn.close()
    assert upstream.connections_opened == 1
    assert {r.connection_id for r in upstream.requests} == {1}
    _json_request(upstream, "GET", "/v1/models")
    assert upstream.connections_opened == 2
    assert upstream.last_request.connection_id == 2


def test_chunked_request_body_is_recorded(upstream: FakeUpstream) -> None:
    payload = json.dumps(CHAT_BODY).encode()
    with _connect(upstream) as sock, sock.makefile("rb") as stream:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: fake\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (10, payload[:10])
            + b"%x\r\n%s\r\n" % (len(payload) - 10, payload[10:])
            + b"0\r\n\r\n"
        )
        status, headers = _read_head(stream)
        stream.read(int(headers["content-length"]))
    assert status == 200
    assert upstream.last_request.body == payload


@pytest.mark.parametrize("prefix", ["", "/openai/deployments/gpt4"])
def test_prefixes(prefix: str) -> None:
    with FakeUpstream(prefix=prefix) as server:
        assert server.url == f"http://127.0.0.1:{server.port}{prefix}"
        with openai.OpenAI(
            base_url=server.url,
            api_key="x",
            max_retries=0,
            timeout=5.0,
            default_query={"api-version": "2024-06-01"},
        ) as sdk:
            response = sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        assert response.choices[0].message.content == DEFAULT_CONTENT
        record = server.last_request
        assert record.bare_path == f"{prefix}/chat/completions"
        assert record.path == f"{prefix}/chat/completions?api-version=2024-06-01"
        assert record.query == {"api-version": ["2024-06-01"]}
        response404, _ = _json_request(server, "POST", "/v1/chat/completions", b"{}")
        assert response404.status == 404
