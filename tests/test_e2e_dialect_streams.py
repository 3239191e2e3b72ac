"""Translated streams keep the relay's properties: backpressure, disconnect cancellation,
heartbeats, usage metrics."""

from __future__ import annotations

import json
import socket

from conftest import GatewayFactory, openai_entry
from dialect_checks import check_message_events, post, request
from test_e2e_streaming import read_until, wait_for

from gatewayd.testing import FakeUpstream, Stream

HI = [{"role": "user", "content": "go"}]


def open_stream(port: int, path: str, body: dict[str, object]) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return s


def drain(s: socket.socket, needle: bytes) -> int:
    """Read to the end of the chunked body; the byte count (asserting ``needle`` came)."""
    total = 0
    tail = b""
    seen = False
    s.settimeout(30)
    while not tail.endswith(b"\r\n0\r\n\r\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
        seen = seen or needle in tail + chunk
        tail = (tail + chunk)[-256:]
    assert seen, needle
    return total


def test_slow_messages_reader_pauses_the_upstream(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(events=4000, event_size=10_000))
    gw = gateway({"model_list": [openai_entry("big", upstream)]})
    base_rss = gw.rss_kib()
    s = open_stream(
        gw.port, "/v1/messages", {"model": "big", "max_tokens": 5, "messages": HI, "stream": True}
    )
    try:
        assert b"message_start" in read_until(s, b"message_start")
        stats = upstream.wait_for_streams(1)[0]
        stalled_at = stats.wait_stalled()
        assert stalled_at >= 0, "upstream kept writing into the gateway"
        assert stalled_at < 10_000_000 and not stats.finished
        grown = gw.rss_kib() - base_rss
        assert grown < 30_000, f"gateway RSS grew by {grown} KiB while the client stalled"
        assert drain(s, b"message_stop") > 35_000_000
        assert wait_for(lambda: stats.finished, 10)
    finally:
        s.close()


def test_slow_responses_reader_pauses_the_upstream(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(events=2000, event_size=10_000))
    gw = gateway(
        {
            "model_list": [
                {"model_name": "big", "params": {"model": "vllm/x", "api_base": upstream.url}}
            ]
        }
    )
    s = open_stream(gw.port, "/v1/responses", {"model": "big", "input": "go", "stream": True})
    try:
        assert b"response.created" in read_until(s, b"response.created")
        stats = upstream.wait_for_streams(1)[0]
        stalled_at = stats.wait_stalled()
        assert stalled_at >= 0 and not stats.finished
        # The final event carries the whole output, as the Responses API's does.
        assert drain(s, b"response.completed") > 2 * 20_000_000
    finally:
        s.close()


def test_disconnect_mid_messages_stream_closes_upstream(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(events=200, interval=0.05))
    gw = gateway({"model_list": [openai_entry("chatty", upstream)]})
    s = open_stream(
        gw.port, "/messages", {"model": "chatty", "max_tokens": 5, "messages": HI, "stream": True}
    )
    assert b"text_delta" in read_until(s, b"text_delta")
    stats = upstream.wait_for_streams(1)[0]
    s.close()
    assert wait_for(lambda: stats.client_closed, 3), "upstream never saw the close"
    assert not stats.finished
    assert wait_for(lambda: "client_closed_mid_stream" in gw.log(), 5)


def test_heartbeats_then_anthropic_events_and_usage_metrics(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(first_byte_delay=0.5))
    gw = gateway(
        {
            "model_list": [openai_entry("m", upstream)],
            "general_settings": {"stream_heartbeat_interval": 0.1},
        }
    )
    r = post(
        gw.base_url + "/messages", {"model": "m", "max_tokens": 5, "messages": HI, "stream": True}
    )
    assert r.text.startswith(": gatewayd: waiting for upstream")
    kinds = [e.type for e in check_message_events(r.content)]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    metrics = request("GET", gw.base_url.removesuffix("/v1") + "/metrics").text
    assert "gatewayd_tokens_total" in metrics
