"""Upstreams that send odd bytes, end to end: every one is a clear error in OpenAI's
shape (retried or falling back), never a 500, a traceback or a hang.

One daemon serves the whole module: alias ``h`` is the hostile upstream with a fallback
to ``backup``; ``solo`` is the hostile upstream alone (to see the final error).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import brotli  # type: ignore[import-untyped]
import pytest
from conftest import UPSTREAM_KEY, openai_entry
from test_e2e_api import CHAT, raw

from gatewayd.testing import FakeUpstream, GatewayProcess, RawResponse, SSEFramingStream

OK_BODY = {
    "id": "chatcmpl-h",
    "object": "chat.completion",
    "created": 1,
    "model": "up-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "from hostile"},
            "finish_reason": "stop",
        }
    ],
}
SSE_OK = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"from hostile"},"finish_reason":null}]}\n\ndata: [DONE]\n\n'
)


@pytest.fixture(scope="module")
def hostile() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def backup() -> Iterator[FakeUpstream]:
    with FakeUpstream(content="from backup") as server:
        yield server


@pytest.fixture(scope="module")
def daemon(hostile: FakeUpstream, backup: FakeUpstream) -> Iterator[GatewayProcess]:
    config = {
        "model_list": [
            openai_entry("h", hostile, timeout=3),
            openai_entry("solo", hostile, timeout=3),
            openai_entry("backup", backup),
            {
                "model_name": "anth",
                "params": {
                    "model": "anthropic/claude-x",
                    "api_base": hostile.origin,
                    "api_key": UPSTREAM_KEY,
                    "timeout": 3,
                },
            },
        ],
        "general_settings": {"fallbacks": [{"h": ["backup"]}], "allowed_fails": 100000},
    }
    proc = GatewayProcess(config)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def gw(daemon: GatewayProcess, hostile: FakeUpstream) -> GatewayProcess:
    hostile.reset()
    return daemon


def response(
    status: int, body: bytes, headers: dict[str, str] | None = None, version: str = "1.1"
) -> RawResponse:
    """One whole HTTP response with a Content-Length, then the connection closes."""
    h = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    head = f"HTTP/{version} {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
    return RawResponse(head.encode() + b"Connection: close\r\n\r\n" + body)


def chunked(status: int, body: bytes, headers: dict[str, str]) -> RawResponse:
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    data = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    return RawResponse(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + data)


def chat(gw: GatewayProcess, alias: str, **extra: Any) -> tuple[int, dict[str, str], Any]:
    payload = json.dumps({**CHAT, "model": alias, **extra}).encode()
    status, headers, body = raw(
        gw.port, "POST", "/v1/chat/completions", payload, {"content-type": "application/json"}
    )
    text = body.decode("utf-8")
    return status, headers, (json.loads(text) if not extra.get("stream") else text)


def assert_falls_back_then_502(gw: GatewayProcess, hostile: FakeUpstream, bad: RawResponse) -> str:
    """``bad`` is a bad upstream response: ``h`` falls back, ``solo`` answers 502."""
    hostile.enqueue(bad)
    status, headers, body = chat(gw, "h")
    assert status == 200, body
    assert headers["x-gatewayd-fallback"] == "backup"
    assert body["choices"][0]["message"]["content"] == "from backup"
    hostile.enqueue(bad)
    status, _, body = chat(gw, "solo")
    assert status == 502, body
    err = body["error"]
    assert err["code"] == "bad_upstream_response", err
    assert "internal" not in json.dumps(body)
    assert hostile.count() == 2
    return str(err["message"])


# -- 1. NaN and Infinity -----------------------------------------------------------


@pytest.mark.parametrize("word", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_200_holding_nan_or_infinity_is_a_bad_response(
    gw: GatewayProcess, hostile: FakeUpstream, word: bytes
) -> None:
    body = json.dumps(OK_BODY).encode()[:-1] + b',"usage":{"prompt_tokens":' + word + b"}}"
    assert_falls_back_then_502(gw, hostile, response(200, body))


def test_a_client_number_out_of_range_is_a_400_and_never_sent_as_infinity(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    payload = b'{"model":"solo","messages":[{"role":"user","content":"x"}],"temperature":1e999}'
    status, _, body = raw(
        gw.port, "POST", "/v1/chat/completions", payload, {"content-type": "application/json"}
    )
    assert status == 400, body
    err = json.loads(body)["error"]
    assert "1e999" in err["message"] and err["type"] == "invalid_request_error"
    assert hostile.count() == 0


def test_nan_in_a_stream_event_after_the_start_ends_the_stream_in_band(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    first = SSE_OK.split(b"\n\n")[0] + b"\n\n"
    hostile.enqueue(
        SSEFramingStream([first, b'data: {"choices":[{"logprobs":-Infinity}]}\n\n'], interval=0.3)
    )
    status, _, text = chat(gw, "solo", stream=True)
    assert status == 200
    events = [e for e in text.split("\n\n") if e]
    assert "from hostile" in events[0]
    err = json.loads(events[-1][len("data: ") :])["error"]
    assert err["code"] == "bad_upstream_response" and "NaN or Infinity" in err["message"]
    assert "Infinity" not in events[-1].replace("NaN or Infinity", "")
    assert "[DONE]" not in text


def test_nan_in_the_first_stream_event_falls_back_before_anything_is_sent(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    sse = {"Content-Type": "text/event-stream"}
    hostile.enqueue(chunked(200, b'data: {"x":NaN}\n\n' + SSE_OK, sse))
    status, headers, text = chat(gw, "h", stream=True)
    assert status == 200 and headers["x-gatewayd-fallback"] == "backup"
    assert "backup" in text  # the backup's stream, word by word
    assert "NaN" not in text


def test_nan_inside_an_anthropic_tool_input_is_a_bad_response(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    body = (
        b'{"type":"message","id":"m","model":"c","stop_reason":"tool_use","usage":{},'
        b'"content":[{"type":"tool_use","id":"t","name":"f","input":{"x":NaN}}]}'
    )
    hostile.enqueue(response(200, body))
    status, _, reply = chat(gw, "anth")
    assert status == 502 and reply["error"]["code"] == "bad_upstream_response"


# -- 2. error objects in OpenAI's schema -------------------------------------------


def test_an_integer_error_code_reaches_the_client_as_a_string(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    # llama.cpp's shape (Docker Model Runner's engine).
    err = {"error": {"code": 400, "message": "the request exceeds the context", "type": 7}}
    hostile.enqueue(response(400, json.dumps(err).encode()))
    status, _, body = chat(gw, "solo")
    assert status == 400
    assert body["error"] == {
        "code": "400",
        "message": "the request exceeds the context",
        "type": "7",
        "param": None,
    }


def test_stream_error_events_are_normalised(gw: GatewayProcess, hostile: FakeUpstream) -> None:
    first = SSE_OK.split(b"\n\n")[0] + b"\n\n"
    bad = b'data: {"error":{"code":500,"message":"engine died","param":3}}\n\n'
    hostile.enqueue(SSEFramingStream([first, bad], interval=0.2))
    status, _, text = chat(gw, "solo", stream=True)
    assert status == 200
    events = [json.loads(e[len("data: ") :]) for e in text.split("\n\n") if e.startswith("data: {")]
    error = next(e["error"] for e in events if "error" in e)
    assert error == {"code": "500", "message": "engine died", "param": "3", "type": "api_error"}


# -- 3. deep nesting ---------------------------------------------------------------


def test_a_200_nested_100000_deep_is_a_bad_response(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    assert_falls_back_then_502(gw, hostile, response(200, deep))
    assert "Traceback" not in gw.log() and "internal_error" not in gw.log()


def test_a_500_nested_100000_deep_is_an_upstream_error(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    hostile.enqueue(response(500, deep))
    status, headers, body = chat(gw, "h")
    assert status == 200 and headers["x-gatewayd-fallback"] == "backup"
    hostile.enqueue(response(500, deep))
    status, _, body = chat(gw, "solo")
    assert status == 500  # the upstream's own status, as for any upstream error
    assert body["error"]["type"] == "api_error"
    assert body["error"]["message"].startswith("upstream returned HTTP 500: [[[")
    assert "Traceback" not in gw.log() and "internal_error" not in gw.log()


# -- 4. compressed answers ---------------------------------------------------------

ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
}


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_a_compressed_json_answer_is_decoded(
    gw: GatewayProcess, hostile: FakeUpstream, coding: str
) -> None:
    body = ENCODERS[coding](json.dumps(OK_BODY).encode())
    hostile.enqueue(response(200, body, {"Content-Encoding": coding}))
    status, headers, reply = chat(gw, "solo")
    assert status == 200, reply
    assert reply["choices"][0]["message"]["content"] == "from hostile"
    assert "content-encoding" not in headers
    assert hostile.last_request.headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_a_compressed_event_stream_is_decoded(
    gw: GatewayProcess, hostile: FakeUpstream, coding: str
) -> None:
    headers = {"Content-Type": "text/event-stream", "Content-Encoding": coding}
    hostile.enqueue(chunked(200, ENCODERS[coding](SSE_OK), headers))
    status, client_headers, text = chat(gw, "solo", stream=True)
    assert status == 200
    assert "content-encoding" not in client_headers
    assert client_headers["content-type"].startswith("text/event-stream")
    assert text == SSE_OK.decode()


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_a_compressed_error_body_is_decoded(
    gw: GatewayProcess, hostile: FakeUpstream, coding: str
) -> None:
    err = {"error": {"message": "model not loaded", "type": "invalid_request_error"}}
    hostile.enqueue(
        response(400, ENCODERS[coding](json.dumps(err).encode()), {"Content-Encoding": coding})
    )
    status, headers, body = chat(gw, "solo")
    assert status == 400
    assert body["error"]["message"] == "model not loaded"
    assert "content-encoding" not in headers


def test_an_encoding_the_gateway_cannot_decode_is_a_502_naming_it(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    bad = response(200, b"\x28\xb5\x2f\xfd garbage", {"Content-Encoding": "zstd"})
    message = assert_falls_back_then_502(gw, hostile, bad)
    assert "zstd" in message


def _flushed(coding: str, events: list[bytes]) -> list[bytes]:
    """``events`` compressed as a streaming server does: one flushed piece per event."""
    if coding == "br":
        c = brotli.Compressor()
        return [c.process(e) + c.flush() for e in events] + [c.finish()]
    z = zlib.compressobj(wbits=31 if coding == "gzip" else 15)
    return [z.compress(e) + z.flush(zlib.Z_SYNC_FLUSH) for e in events] + [z.flush()]


@pytest.mark.parametrize("coding", sorted(ENCODERS))
@pytest.mark.parametrize("alias", ["solo", "anth"])
def test_an_event_stream_compressed_event_by_event_is_decoded(
    gw: GatewayProcess, hostile: FakeUpstream, coding: str, alias: str
) -> None:
    # Issue 17: a Brotli stream flushed per event, in its own chunks, as a real server
    # sends it, to the pass-through and to the Anthropic translation.
    if alias == "anth":
        events = [
            b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
            b'"model":"claude-x","usage":{"input_tokens":3,"output_tokens":1}}}\n\n',
            b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
            b'"delta":{"type":"text_delta","text":"from hostile"}}\n\n',
            b'event: message_delta\ndata: {"type":"message_delta","delta":'
            b'{"stop_reason":"end_turn"},"usage":{"output_tokens":2}}\n\n',
            b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
        ]
    else:
        events = [e + b"\n\n" for e in SSE_OK.split(b"\n\n") if e]
    parts = [p for p in _flushed(coding, events) if p]
    head = "HTTP/1.1 200 X\r\nContent-Type: text/event-stream\r\n"
    head += f"Content-Encoding: {coding}\r\nTransfer-Encoding: chunked\r\n\r\n"
    data = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"
    hostile.enqueue(RawResponse(head.encode() + data))
    status, headers, text = chat(gw, alias, stream=True)
    assert status == 200, text
    assert "content-encoding" not in headers
    assert "from hostile" in text and text.rstrip().endswith("data: [DONE]")


def test_an_event_stream_in_an_encoding_the_gateway_cannot_decode_is_refused_like_json(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    bad = chunked(
        200,
        b"\x28\xb5\x2f\xfd garbage",
        {"Content-Type": "text/event-stream", "Content-Encoding": "zstd"},
    )
    hostile.enqueue(bad)
    status, _, text = chat(gw, "solo", stream=True)
    assert status == 502, text
    err = json.loads(text)["error"]
    assert err["code"] == "bad_upstream_response" and "zstd" in err["message"]


def test_a_corrupt_gzip_body_is_a_bad_response(gw: GatewayProcess, hostile: FakeUpstream) -> None:
    bad = response(200, b"\x1f\x8b\x08\x00 not really gzip", {"Content-Encoding": "gzip"})
    assert_falls_back_then_502(gw, hostile, bad)


# -- 5. an endless event -----------------------------------------------------------


def test_an_event_past_the_bound_ends_the_stream_with_an_in_band_error(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    first = SSE_OK.split(b"\n\n")[0] + b"\n\n"
    huge = b"data: " + b"x" * (9 * 1024 * 1024)
    hostile.enqueue(SSEFramingStream([first, huge, b"\n\ndata: [DONE]\n\n"], interval=0.2))
    status, _, text = chat(gw, "solo", stream=True)
    assert status == 200
    assert len(text) < 1024 * 1024  # the giant event was not relayed
    last = json.loads(text.strip().split("\n\n")[-1][len("data: ") :])
    assert last["error"]["code"] == "upstream_event_too_large"
    assert "[DONE]" not in text


# -- 6. secrets --------------------------------------------------------------------


def test_a_key_quoted_across_the_cut_leaves_no_fragment(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    text = ("x" * 280 + f" bad key {UPSTREAM_KEY} was sent").encode()  # across byte 300
    hostile.enqueue(response(401, text, {"Content-Type": "text/plain"}))
    status, _, body = chat(gw, "solo")
    assert status == 401
    message = body["error"]["message"]
    assert "***" in message
    secret = UPSTREAM_KEY[UPSTREAM_KEY.index("SECRET") :]  # "sk-upstream" is in the paths
    for i in range(len(secret) - 6):
        fragment = secret[i : i + 6]
        assert fragment not in message
        assert fragment not in gw.log()


def test_stream_error_events_are_scrubbed(gw: GatewayProcess, hostile: FakeUpstream) -> None:
    first = SSE_OK.split(b"\n\n")[0] + b"\n\n"
    bad = f'data: {{"error":{{"message":"key {UPSTREAM_KEY} is over quota"}}}}\n\n'.encode()
    hostile.enqueue(SSEFramingStream([first, bad], interval=0.2))
    status, _, text = chat(gw, "solo", stream=True)
    assert status == 200
    assert UPSTREAM_KEY not in text and "key *** is over quota" in text


# -- siblings: other odd bytes -----------------------------------------------------


def test_invalid_utf8_and_empty_200_bodies_are_bad_responses(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    assert_falls_back_then_502(gw, hostile, response(200, b'{"id": "\xff\xfe"}'))
    hostile.reset()
    assert_falls_back_then_502(gw, hostile, response(200, b""))


def test_a_body_shorter_than_its_content_length_falls_back(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    body = json.dumps(OK_BODY).encode()
    hostile.enqueue(response(200, body[:20], {"Content-Length": str(len(body))}))
    status, headers, _ = chat(gw, "h")
    assert status == 200 and headers["x-gatewayd-fallback"] == "backup"


def test_a_huge_header_falls_back(gw: GatewayProcess, hostile: FakeUpstream) -> None:
    hostile.enqueue(response(200, json.dumps(OK_BODY).encode(), {"X-Big": "a" * 200_000}))
    status, headers, _ = chat(gw, "h")
    assert status == 200 and headers["x-gatewayd-fallback"] == "backup"


def test_a_1xx_before_the_answer_and_http10_close_delimited(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    body = json.dumps(OK_BODY).encode()
    final = response(200, body).data
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    hostile.enqueue(RawResponse(early + final))
    status, _, reply = chat(gw, "solo")
    assert status == 200, reply  # interim responses are skipped
    assert reply["choices"][0]["message"]["content"] == "from hostile"
    head = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
    hostile.enqueue(RawResponse(head + body))
    status, _, reply = chat(gw, "solo")
    assert status == 200, reply
    assert reply["choices"][0]["message"]["content"] == "from hostile"


# -- Anthropic: the same rules on translated output ----------------------------------

ANTHROPIC_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
    b'"model":"claude-x","usage":{"input_tokens":3}}}\n\n'
)


def test_anthropic_stream_error_events_are_scrubbed(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"key ' + UPSTREAM_KEY.encode() + b' is overloaded"}}\n\n'
    )
    hostile.enqueue(SSEFramingStream([ANTHROPIC_START, error], interval=0.2))
    status, _, text = chat(gw, "anth", stream=True)
    assert status == 200
    assert UPSTREAM_KEY not in text and "key *** is overloaded" in text


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"message","id":"m","model":NaN,"content":[],"usage":{}}',
        b'{"type":"message","content":[' * 50_000 + b"]}" * 50_000,
        b'{"type":"message","content":[7],"usage":{"input_tokens":"many"}}',
    ],
    ids=["nan", "deep", "odd-shape"],
)
def test_anthropic_bodies_the_translation_cannot_take_are_bad_responses(
    gw: GatewayProcess, hostile: FakeUpstream, body: bytes
) -> None:
    hostile.enqueue(response(200, body))
    status, _, reply = chat(gw, "anth")
    assert status == 502, reply
    assert reply["error"]["code"] == "bad_upstream_response"


def test_an_anthropic_error_nested_deep_is_still_an_error_in_openai_shape(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    hostile.enqueue(response(529, b'{"error":' * 100_000 + b"1" + b"}" * 100_000))
    status, _, reply = chat(gw, "anth")
    assert status == 529, reply
    assert reply["error"]["message"].startswith("upstream returned HTTP 529")


def test_a_redirect_is_a_bad_response_not_a_3xx_for_the_client(
    gw: GatewayProcess, hostile: FakeUpstream
) -> None:
    bad = response(302, b"", {"Location": "https://elsewhere.test/v1?key=s3cret"})
    message = assert_falls_back_then_502(gw, hostile, bad)
    assert "elsewhere.test" in message and "s3cret" not in message


def test_zz_no_traceback_in_the_log(gw: GatewayProcess) -> None:
    log = gw.log()
    assert "Traceback" not in log and "Unhandled error" not in log
