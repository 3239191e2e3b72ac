"""Streaming end to end: backpressure, disconnects, timeouts, mid-stream failure."""

from __future__ import annotations

import json
import socket
import threading
import time

import openai
import pytest
from conftest import GatewayFactory, openai_entry
from conftest import sdk as client

from gatewayd.testing import FakeUpstream, RawResponse, SSEFramingStream, Stream, StreamThenCut
from gatewayd.testing.rawhttp import read_response


def stream_request(port: int, alias: str, extra: str = "") -> socket.socket:
    """Send a streaming chat request on a raw socket; the caller reads (or not)."""
    body = json.dumps(
        {"model": alias, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    ).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )
    return s


def read_until(s: socket.socket, needle: bytes, limit: float = 10.0) -> bytes:
    return read_response(s, limit, until=needle)


def wait_for(pred: object, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_slow_reader_pauses_the_upstream_and_memory_stays_flat(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    # ~60 MB of events: 6000 events of ~10 KB.
    upstream.set_default(Stream(events=6000, event_size=10_000))
    gw = gateway({"model_list": [openai_entry("big", upstream)]})
    base_rss = gw.rss_kib()
    s = stream_request(gw.port, "big")
    try:
        head = read_until(s, b"data: ")
        assert b"200 OK" in head
        stats = upstream.wait_for_streams(1)[0]
        # The client reads nothing: the upstream must soon be blocked far from the end.
        stalled_at = stats.wait_stalled()
        assert stalled_at >= 0, "upstream kept writing into the gateway"
        assert stalled_at < 10_000_000, stalled_at
        assert not stats.finished
        grown = gw.rss_kib() - base_rss
        assert grown < 30_000, f"gateway RSS grew by {grown} KiB while the client stalled"
        # Now drain it all, slowly at first, and check it is complete.
        total = len(head)
        done = head.endswith(b"0\r\n\r\n")
        s.settimeout(30)
        while not done:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            done = b"data: [DONE]" in chunk[-64:] or chunk.endswith(b"0\r\n\r\n")
        assert total > 55_000_000
        assert wait_for(lambda: stats.finished, 10)
    finally:
        s.close()


def test_disconnect_before_first_byte_closes_upstream(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(first_byte_delay=20))
    gw = gateway({"model_list": [openai_entry("slow", upstream)]})
    s = stream_request(gw.port, "slow")
    stats = upstream.wait_for_streams(1)[0]
    time.sleep(0.3)
    closed = time.monotonic()
    s.close()
    assert wait_for(lambda: stats.client_closed, 8), "upstream never saw the close"
    # Well before the upstream would have ended by itself, with room for a busy machine.
    assert stats.closed_at is not None and stats.closed_at - closed < 5.0


def test_disconnect_mid_stream_closes_upstream(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(events=200, interval=0.05))
    gw = gateway({"model_list": [openai_entry("chatty", upstream)]})
    s = stream_request(gw.port, "chatty")
    got = read_until(s, b"chat.completion.chunk")
    assert b"chat.completion.chunk" in got
    stats = upstream.wait_for_streams(1)[0]
    time.sleep(0.3)
    closed = time.monotonic()
    s.close()
    assert wait_for(lambda: stats.client_closed, 8), "upstream never saw the close"
    # Well before the upstream would have ended by itself, with room for a busy machine.
    assert stats.closed_at is not None and stats.closed_at - closed < 5.0
    assert not stats.finished
    assert wait_for(lambda: "client_closed_mid_stream" in gw.log(), 5)


def test_upstream_cut_mid_stream_makes_the_sdk_raise(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(StreamThenCut(3))
    gw = gateway({"model_list": [openai_entry("flaky", upstream)]})
    stream = client(gw.base_url).chat.completions.create(
        model="flaky", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received, "the events before the cut should have arrived"
    assert wait_for(lambda: "broke off" in gw.log(), 5)


def test_idle_timeout_ends_the_stream_with_an_error(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(events=4, interval=30))
    gw = gateway(
        {
            "model_list": [openai_entry("stuck", upstream)],
            "general_settings": {"stream_idle_timeout": 0.5},
        }
    )
    start = time.monotonic()
    with pytest.raises(openai.APIError) as info:
        for _ in client(gw.base_url).chat.completions.create(
            model="stuck", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            pass
    # Well below the upstream's 30 s between events: a bound a busy machine keeps.
    assert time.monotonic() - start < 15
    assert "0.5" in str(info.value)


def test_stream_timeout_to_first_byte_falls_back(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    upstream.set_default(Stream(first_byte_delay=30))
    gw = gateway(
        {
            "model_list": [
                openai_entry("a", upstream, stream_timeout=0.5),
                openai_entry("b", upstream2),
            ],
            "general_settings": {"fallbacks": [{"a": ["b"]}]},
        }
    )
    start = time.monotonic()
    resp = client(gw.base_url).chat.completions.with_raw_response.create(
        model="a", messages=[{"role": "user", "content": "x"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)
    assert text == "Hello from fake upstream"
    assert resp.headers["x-gatewayd-fallback"] == "b"
    assert time.monotonic() - start < 15  # well below the 30 s the first would take


def test_heartbeats_while_waiting_for_the_first_byte(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(first_byte_delay=1.2, events=2))
    gw = gateway(
        {
            "model_list": [openai_entry("slow", upstream)],
            "general_settings": {"stream_heartbeat_interval": 0.2},
        }
    )
    s = stream_request(gw.port, "slow")
    try:
        data = read_until(s, b"[DONE]")
    finally:
        s.close()
    first_data = data.index(b"data: ")
    assert data.count(b": keepalive") >= 2
    assert data.index(b": keepalive") < first_data
    assert b"cache-control: no-cache" in data.lower()


def test_framing_is_robust_to_odd_upstreams(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    chunk = (
        '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
        '"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":null}]}'
    )
    e1 = ("data: " + chunk % "Hel" + "\r\n\r\n").encode()
    e2 = ("event: message\r\ndata: " + chunk % "lo" + "\r\n\r\n").encode()
    e3 = ("data: " + chunk % "!" + "\n\n").encode()
    pieces = [e1[:10], e1[10:] + b": comment\r\n\r\n" + e2[:5], e2[5:] + e3, b"data: [DONE]\n\n"]
    upstream.set_default(SSEFramingStream(pieces, interval=0.05))
    gw = gateway({"model_list": [openai_entry("odd", upstream)]})
    chunks = list(
        client(gw.base_url).chat.completions.create(
            model="odd", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello!"


def test_many_concurrent_streams(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    upstream.set_default(Stream(events=20, interval=0.02))
    gw = gateway({"model_list": [openai_entry("m", upstream)]})
    c = client(gw.base_url)
    results: list[int] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            n = sum(
                1
                for ch in c.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "x"}], stream=True
                )
                if ch.choices and ch.choices[0].delta.content
            )
            results.append(n)
        except BaseException as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert results == [20] * 40


def test_a_close_delimited_stream_cut_before_done_is_not_silent(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    # No Content-Length, no chunking: the body ends when the connection does, so a cut
    # looks like an end. Without [DONE] the client must be told.
    event = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m",'
        b'"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
    )
    upstream.set_default(
        RawResponse(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + event)
    )
    gw = gateway({"model_list": [openai_entry("cut", upstream)]})
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client(gw.base_url).chat.completions.create(
            model="cut", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            received.append(chunk)
    assert [c.choices[0].delta.content for c in received] == ["Hel"]
    assert "[DONE]" in str(info.value)
