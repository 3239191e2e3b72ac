"""End to end: speech, images, moderations and rerank through the real daemon, with the
official SDKs (openai, cohere), on the mock and on fake upstreams that check what they
received; ``params.api_endpoints`` deciding which deployment serves what."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
import wave
from collections.abc import Callable
from typing import Any

import cohere
import pytest
from conftest import EXAMPLE_CONFIG, UPSTREAM_KEY, GatewayFactory, openai_entry
from conftest import sdk as client
from test_e2e_api import assert_openai_error, post, raw

from gatewayd.testing import Error, FakeUpstream, RawResponse


def http_answer(
    body: bytes, ctype: str = "application/json", status: int = 200, chunked: bool = False
) -> RawResponse:
    """A whole HTTP/1.1 response for the fake upstream to write (kept alive)."""
    reason = {200: "OK", 503: "Service Unavailable"}.get(status, "X")
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\n"
    if chunked:
        size = 1000
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        return RawResponse(
            (head + "transfer-encoding: chunked\r\n\r\n").encode() + payload, close=False
        )
    return RawResponse((head + f"content-length: {len(body)}\r\n\r\n").encode() + body, close=False)


def mock_entry(alias: str, **params: Any) -> dict[str, Any]:
    return {"model_name": alias, "params": {"model": f"mock/{alias}", **params}}


SPEECH = {"model": "voice", "input": "Hello from the gateway", "voice": "alloy"}
RERANK = {
    "model": "ranker",
    "query": "what is the capital of France",
    "documents": ["Berlin is in Germany", "Paris is the capital of France", "Bananas"],
    "top_n": 2,
}


# -- the mock answers every endpoint ------------------------------------------


def test_example_config_answers_speech_images_moderation_rerank(gateway: GatewayFactory) -> None:
    gw = gateway(EXAMPLE_CONFIG)
    c = client(gw.base_url)
    with c.audio.speech.with_streaming_response.create(
        model="demo", voice="alloy", input="Hello there", response_format="wav"
    ) as speech:
        assert speech.headers["content-type"] == "audio/wav"
        assert speech.headers["x-gatewayd-model"] == "demo"
        audio = b"".join(speech.iter_bytes())
    with wave.open(io.BytesIO(audio)) as w:
        assert w.getnchannels() == 1 and w.getnframes() > 0
    mp3 = c.audio.speech.create(model="demo", voice="alloy", input="Hello there")  # mp3
    assert mp3.response.headers["content-type"] == "audio/mpeg"
    assert mp3.content[:3] == b"\xff\xfb\x90" and len(mp3.content) % 417 == 0
    img = c.images.generate(model="demo", prompt="a red square", n=2)
    assert img.data is not None and len(img.data) == 2
    assert base64.b64decode(img.data[0].b64_json or "").startswith(b"\x89PNG\r\n\x1a\n")
    mod = c.moderations.create(model="demo", input=["hello", "world"])
    assert len(mod.results) == 2 and mod.results[0].flagged is False
    co = cohere.ClientV2(base_url=gw.url, api_key="none", timeout=30)
    ranked = co.rerank(
        model="demo", query="capital of France", documents=["Berlin", "Paris capital France"]
    )
    assert [r.index for r in ranked.results] == [1, 0]


def test_rerank_paths_with_and_without_v1_and_v2(gateway: GatewayFactory) -> None:
    gw = gateway({"model_list": [mock_entry("ranker")]})
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        status, _, body = post(gw.port, path, RERANK)
        assert status == 200, body
        assert [r["index"] for r in body["results"]] == [1, 0]
    for path in ("/moderations", "/v1/moderations"):
        status, _, body = post(gw.port, path, {"model": "ranker", "input": "hi"})
        assert status == 200 and body["results"][0]["flagged"] is False, body
    _, _, text = raw(gw.port, "GET", "/metrics")
    assert b'gatewayd_endpoint_requests_total{alias="ranker",endpoint="rerank",status="200"} 3' in (
        text
    )
    assert b'endpoint="moderations",status="200"} 2' in text
    # One access-log line each, as for chat.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and '"POST /v2/rerank" 200 alias=ranker' not in gw.log():
        time.sleep(0.05)
    assert '"POST /v2/rerank" 200 alias=ranker' in gw.log()
    assert '"POST /moderations" 200 alias=ranker' in gw.log()


def test_speech_mock_refuses_bad_input_with_openai_400(gateway: GatewayFactory) -> None:
    gw = gateway({"model_list": [mock_entry("voice")]})
    status, _, body = post(gw.port, "/v1/audio/speech", {"model": "voice", "voice": "alloy"})
    assert status == 400
    assert assert_openai_error(body)["param"] == "input"


# -- which deployment serves what -------------------------------------------------


def test_api_endpoints_pick_the_deployment_and_400_names_alias_and_endpoint(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    upstream.set_default(http_answer(b'{"never": true}'))
    upstream2.set_default(http_answer(json.dumps({"results": [{"index": 0}]}).encode()))
    gw = gateway(
        {
            "model_list": [
                openai_entry("mixed", upstream, api_endpoints=["chat"]),
                openai_entry("mixed", upstream2, api_endpoints=["rerank", "moderations"]),
                openai_entry("chatonly", upstream, api_endpoints="chat"),
                {
                    "model_name": "claude",
                    "params": {"model": "anthropic/claude-x", "api_key": "k"},
                },
                {"model_name": "tts", "params": {"model": "mock/tts"}},
                {
                    "model_name": "moded",
                    "params": {"model": "mock/m"},
                    "model_info": {"mode": "audio_speech"},
                },
            ]
        }
    )
    for _ in range(4):  # always the deployment that serves rerank
        status, _, body = post(gw.port, "/v1/rerank", {**RERANK, "model": "mixed"})
        assert status == 200, body
    assert upstream.count() == 0 and upstream2.count("/rerank") == 4
    status, _, body = post(gw.port, "/v1/audio/speech", {**SPEECH, "model": "chatonly"})
    assert status == 400
    err = assert_openai_error(body)
    assert "chatonly" in err["message"] and "speech" in err["message"]
    assert err["code"] == "endpoint_not_supported" and err["param"] == "model"
    status, _, body = post(gw.port, "/v1/images/generations", {"model": "claude", "prompt": "x"})
    assert status == 400 and "claude" in assert_openai_error(body)["message"]
    status, _, body = post(gw.port, "/v1/rerank", {**RERANK, "model": "moded"})
    assert status == 400 and "rerank" in assert_openai_error(body)["message"]
    status, _, body = post(gw.port, "/v1/chat/completions", {"model": "moded", "messages": []})
    assert status == 400 and "chat/completions" in assert_openai_error(body)["message"]
    status, hdrs, _ = raw(
        gw.port,
        "POST",
        "/v1/audio/speech",
        json.dumps({**SPEECH, "model": "moded"}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 200 and hdrs["content-type"] == "audio/mpeg"  # mp3 by default


# -- OpenAI-format fakes: what they received, retries and fallbacks -----------------


def test_speech_streams_upstream_bytes_with_its_content_type(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    audio = bytes(range(256)) * 200
    upstream.enqueue(http_answer(audio, "audio/mpeg", chunked=True))
    gw = gateway({"model_list": [openai_entry("voice", upstream, model="tts-1")]})
    with client(gw.base_url).audio.speech.with_streaming_response.create(
        model="voice", voice="alloy", input="Hi", speed=1.5, extra_headers={"x-request-id": "r-1"}
    ) as speech:
        assert speech.headers["content-type"] == "audio/mpeg"
        assert speech.headers.get("transfer-encoding") == "chunked"
        assert speech.headers["x-request-id"] == "r-1"
        got = b"".join(speech.iter_bytes())
    assert got == audio
    sent = upstream.last_request
    assert sent.headers["x-request-id"] == "r-1"  # the request id goes upstream as for chat
    assert sent.bare_path == "/v1/audio/speech"
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert json.loads(sent.body) == {
        "model": "tts-1",
        "input": "Hi",
        "voice": "alloy",
        "speed": 1.5,
    }


def test_speech_sse_stream_format_passes_through_as_it_comes(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    events = b'data: {"type":"speech.audio.delta","audio":"AAAA"}\n\n' * 3 + (
        b'data: {"type":"speech.audio.done","usage":{"input_tokens":1}}\n\n'
    )
    upstream.enqueue(http_answer(events, "text/event-stream", chunked=True))
    gw = gateway({"model_list": [openai_entry("voice", upstream)]})
    status, hdrs, body = raw(
        gw.port,
        "POST",
        "/v1/audio/speech",
        json.dumps({**SPEECH, "stream_format": "sse"}).encode(),
        {"content-type": "application/json"},
    )
    assert status == 200 and hdrs["content-type"] == "text/event-stream"
    assert body == events
    assert json.loads(upstream.last_request.body)["stream_format"] == "sse"


@pytest.mark.parametrize(
    ("path", "payload", "answer"),
    [
        ("/audio/speech", SPEECH, (b"ID3audio", "audio/mpeg")),
        ("/images/generations", {"model": "voice", "prompt": "cat"}, (b'{"data":[]}', "")),
        ("/moderations", {"model": "voice", "input": "x"}, (b'{"results":[]}', "")),
        ("/rerank", {**RERANK, "model": "voice"}, (b'{"results":[]}', "")),
    ],
)
def test_each_endpoint_retries_then_falls_back(
    gateway: GatewayFactory,
    upstream: FakeUpstream,
    upstream2: FakeUpstream,
    path: str,
    payload: dict[str, Any],
    answer: tuple[bytes, str],
) -> None:
    body, ctype = answer
    upstream.set_default(Error(503))
    upstream2.enqueue(Error(500), http_answer(body, ctype or "application/json"))
    gw = gateway(
        {
            "model_list": [
                openai_entry("voice", upstream),
                openai_entry("backup", upstream2, model="b-model"),
            ],
            "general_settings": {
                "num_retries": 1,
                "fallbacks": [{"voice": ["backup"]}],
                "cooldown_time": 0,
            },
        }
    )
    status, hdrs, got = raw(
        gw.port,
        "POST",
        "/v1" + path,
        json.dumps(payload).encode(),
        {"content-type": "application/json"},
    )
    assert status == 200, got
    assert got == body
    assert hdrs["x-gatewayd-fallback"] == "backup"
    assert upstream.count(path) == 2 and upstream2.count(path) == 2
    assert json.loads(upstream2.last_request.body)["model"] == "b-model"


# -- rerank providers ---------------------------------------------------------


def test_cohere_deployment_gets_v2_rerank_with_its_key(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    answer = {
        "id": "r1",
        "results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.1}],
        "meta": {"billed_units": {"search_units": 1}},
    }
    upstream.set_default(http_answer(json.dumps(answer).encode()))
    gw = gateway(
        {
            "model_list": [
                {
                    "model_name": "ranker",
                    "params": {
                        "model": "cohere/rerank-v3.5",
                        "api_base": upstream.origin,
                        "api_key": "co-KEY",
                    },
                },
                {
                    "model_name": "jina",
                    "params": {
                        "model": "jina_ai/jina-reranker-v2",
                        "api_base": upstream.url,
                        "api_key": "jina-KEY",
                    },
                },
            ]
        }
    )
    co = cohere.ClientV2(base_url=gw.url, api_key="none", timeout=30)
    ranked = co.rerank(model="ranker", query="q", documents=["a", "b"], top_n=2)
    assert [r.index for r in ranked.results] == [1, 0]
    sent = upstream.last_request
    assert sent.bare_path == "/v2/rerank"
    assert sent.headers["authorization"] == "Bearer co-KEY"
    assert json.loads(sent.body) == {
        "model": "rerank-v3.5",
        "query": "q",
        "documents": ["a", "b"],
        "top_n": 2,
    }
    status, _, body = post(gw.port, "/rerank", {"model": "jina", "query": "q", "documents": ["a"]})
    assert status == 200, body
    sent = upstream.last_request
    assert sent.bare_path == "/v1/rerank" and sent.headers["authorization"] == "Bearer jina-KEY"
    status, _, body = post(gw.port, "/v1/chat/completions", {"model": "ranker", "messages": []})
    assert status == 400 and assert_openai_error(body)["code"] == "endpoint_not_supported"
    # The Messages dialect words it in its own error shape.
    status, _, body = post(
        gw.port, "/v1/messages", {"model": "ranker", "max_tokens": 5, "messages": []}
    )
    assert status == 400 and body["type"] == "error" and "ranker" in body["error"]["message"]
    assert upstream.count("/chat/completions") == 0 and upstream.count("/messages") == 0


class EndlessAudio:
    """An upstream that answers one request with a chunked audio body far larger than
    any buffer, counting what it managed to send (its sends block when nobody reads)."""

    CHUNK = 64 * 1024
    TOTAL = 1024 * 1024 * 1024

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sent = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        try:
            conn.settimeout(60)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: audio/mpeg\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            piece = b"%x\r\n" % self.CHUNK + b"\xff" * self.CHUNK + b"\r\n"
            while self.sent < self.TOTAL:
                conn.sendall(piece)
                self.sent += self.CHUNK
        except OSError:
            pass  # the gateway dropped the upstream when its client went
        finally:
            conn.close()
            self.stopped.set()

    def close(self) -> None:
        self.sock.close()


def _settled(read: Callable[[], int], timeout: float = 30.0, quiet: float = 1.0) -> int:
    """``read()`` once it has not changed for ``quiet`` seconds (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"still changing after {timeout} s: {last}")


def test_slow_speech_reader_keeps_gateway_memory_bounded(gateway: GatewayFactory) -> None:
    up = EndlessAudio()
    try:
        gw = gateway(
            {
                "model_list": [
                    {
                        "model_name": "voice",
                        "params": {"model": "openai/tts-1", "api_base": up.url, "api_key": "k"},
                    }
                ]
            }
        )
        before = gw.rss_kib()
        body = json.dumps(SPEECH).encode()
        client_sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
        client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        client_sock.sendall(
            b"POST /v1/audio/speech HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        first = client_sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        assert b"audio/mpeg" in first.split(b"\r\n\r\n")[0].lower()
        # The client reads nothing more: the upstream must be held back, not buffered.
        sent = _settled(lambda: up.sent)
        assert sent < 48 * 1024 * 1024, sent
        assert gw.rss_kib() - before < 48 * 1024, (before, gw.rss_kib())
        client_sock.close()
        assert up.stopped.wait(30), "the upstream was not dropped when the client went"
        assert up.sent < EndlessAudio.TOTAL
    finally:
        up.close()


def _spend(port: int, alias: str) -> float:
    _, _, text = raw(port, "GET", "/metrics")
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("gatewayd_spend_usd_total{") and f'alias="{alias}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_spend_per_character_image_second_and_request(gateway: GatewayFactory) -> None:
    gw = gateway(
        {
            "model_list": [
                mock_entry("voice", input_cost_per_character=0.001),
                mock_entry("painter", output_cost_per_image=0.04),
                {
                    "model_name": "whisper",
                    "params": {"model": "mock/w"},
                    "model_info": {"input_cost_per_second": 0.01},
                },
                mock_entry("ranker", input_cost_per_query=0.002),
            ],
            "keys": [{"key": "sk-spender-0123456789", "name": "spender"}],
        }
    )
    key = {"authorization": "Bearer sk-spender-0123456789"}
    status, _, _ = raw(
        gw.port,
        "POST",
        "/v1/audio/speech",
        json.dumps({**SPEECH, "input": "x" * 250}).encode(),
        {"content-type": "application/json", **key},
    )
    assert status == 200
    status, _, _ = post(
        gw.port, "/v1/images/generations", {"model": "painter", "prompt": "p", "n": 3}, key
    )
    assert status == 200
    c = client(gw.base_url, key="sk-spender-0123456789")
    from gatewayd.providers.mock_media import wav

    c.audio.transcriptions.create(model="whisper", file=("a.wav", wav(2.0)))
    status, _, _ = post(gw.port, "/v1/rerank", {**RERANK, "model": "ranker"}, key)
    assert status == 200
    assert _spend(gw.port, "voice") == pytest.approx(0.25)
    assert _spend(gw.port, "painter") == pytest.approx(0.12)
    assert _spend(gw.port, "whisper") == pytest.approx(0.02)
    assert _spend(gw.port, "ranker") == pytest.approx(0.002)
    status, _, info = raw(gw.port, "GET", "/key/info", None, key)
    assert status == 200, info
    # The key's spend (what its budget is checked against) has every unit price in it.
    assert json.loads(info)["info"]["spend"]["usd"] == pytest.approx(0.25 + 0.12 + 0.02 + 0.002)


def test_fallback_skips_aliases_that_do_not_serve_the_endpoint_and_keys_are_checked(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    upstream.set_default(Error(503))
    upstream2.set_default(http_answer(b'{"results": []}'))
    gw = gateway(
        {
            "model_list": [
                openai_entry("first", upstream),
                openai_entry("chatty", upstream2, api_endpoints=["chat"]),
                openai_entry("ranker", upstream2, model="ranker-up"),
            ],
            "general_settings": {
                "master_key": "sk-master-0123456789",
                "fallbacks": [{"first": ["chatty", "ranker"]}],
            },
            "keys": [{"key": "sk-small-0123456789", "name": "small", "models": ["ranker"]}],
        }
    )
    master = {"authorization": "Bearer sk-master-0123456789"}
    status, hdrs, body = post(gw.port, "/v1/rerank", {**RERANK, "model": "first"}, master)
    assert status == 200, body
    assert hdrs["x-gatewayd-fallback"] == "ranker"
    assert json.loads(upstream2.last_request.body)["model"] == "ranker-up"
    assert upstream2.count() == 1  # chatty (chat only) was skipped, not tried
    small = {"authorization": "Bearer sk-small-0123456789"}
    status, _, body = post(gw.port, "/v1/rerank", {**RERANK, "model": "first"}, small)
    assert status == 403 and assert_openai_error(body)["type"] == "permission_error"
    status, _, body = post(gw.port, "/v1/rerank", RERANK, {"authorization": "Bearer nope"})
    assert status == 401


def test_streamed_image_generation_is_relayed_as_sse(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    events = (
        b'event: image_generation.partial_image\ndata: {"type":"image_generation.partial_image",'
        b'"b64_json":"AAAA","partial_image_index":0}\n\n'
        b'event: image_generation.completed\ndata: {"type":"image_generation.completed",'
        b'"b64_json":"BBBB","usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}\n\n'
    )
    upstream.enqueue(http_answer(events, "text/event-stream", chunked=True))
    gw = gateway({"model_list": [openai_entry("painter", upstream, model="gpt-image-1")]})
    got = list(
        client(gw.base_url).images.generate(
            model="painter", prompt="a cat", stream=True, partial_images=1
        )
    )
    assert [e.type for e in got] == [
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert json.loads(upstream.last_request.body)["stream"] is True


def test_spend_per_second_of_speech_out(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    from gatewayd.providers.mock_media import mp3, wav

    upstream.enqueue(
        http_answer(wav(2.0), "audio/wav", chunked=True),
        http_answer(mp3(3.0), "audio/mpeg", chunked=True),
    )
    gw = gateway(
        {
            "model_list": [
                openai_entry("voice", upstream, output_cost_per_second=0.01),
            ]
        }
    )
    for fmt in ("wav", "mp3"):
        status, _, _ = raw(
            gw.port,
            "POST",
            "/v1/audio/speech",
            json.dumps({**SPEECH, "response_format": fmt}).encode(),
            {"content-type": "application/json"},
        )
        assert status == 200
    # 2 s of WAV (by its header) and 3 s of 128 kbit/s MP3 (by its frames' bit rate).
    assert _spend(gw.port, "voice") == pytest.approx(0.05, abs=0.001)
