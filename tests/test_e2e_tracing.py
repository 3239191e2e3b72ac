"""OpenTelemetry end to end: a real OTLP/HTTP receiver on loopback (decoding with
opentelemetry-proto) gets the daemon's spans; with the receiver down, requests are
unaffected and memory stays bounded."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import MASTER_KEY, UPSTREAM_KEY, GatewayFactory, openai_entry
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from test_e2e_api import CHAT, post, raw

from gatewayd.testing import Error, FakeUpstream, Stream, closed_port

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
PROMPT = "What is the secret word? PROMPT-TEXT-7731"
#: Export quickly (the SDK's default waits 5 s between batches).
FAST_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "50"}


class Receiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with a protobuf body."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.resources: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = ExportTraceServiceRequest()
                req.ParseFromString(body)
                with receiver.lock:
                    receiver.raw.append(body)
                    for rs in req.resource_spans:
                        receiver.resources.append(
                            {a.key: _value(a.value) for a in rs.resource.attributes}
                        )
                        for ss in rs.scope_spans:
                            receiver.spans.extend(ss.spans)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, n: int, timeout: float = 15.0) -> list[Span]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= n:
                    return list(self.spans)
            time.sleep(0.05)
        with self.lock:
            return list(self.spans)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(span: Span) -> dict[str, Any]:
    return {a.key: _value(a.value) for a in span.attributes}


def _traced(receiver: Receiver, up1: FakeUpstream, up2: FakeUpstream, **otel: Any) -> Any:
    return {
        "model_list": [openai_entry("a", up1, "model-a"), openai_entry("b", up2, "model-b")],
        "general_settings": {
            "master_key": MASTER_KEY,
            "num_retries": 1,
            "fallbacks": [{"a": ["b"]}],
            "otel": {"endpoint": receiver.url, "service_name": "gw-test", **otel},
        },
    }


def test_spans_of_a_request_with_a_retry_and_a_fallback(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, receiver: Receiver
) -> None:
    gw = gateway(_traced(receiver, upstream, upstream2), env=FAST_EXPORT)
    upstream.enqueue(Error(503))
    upstream.enqueue(Error(503))
    status, headers, body = post(
        gw.port,
        "/v1/chat/completions",
        {"model": "a", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50},
        {
            "authorization": f"Bearer {MASTER_KEY}",
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
            "x-request-id": "trace-req-1",
        },
    )
    assert status == 200 and headers["x-gatewayd-fallback"] == "b"
    spans = receiver.wait_for(4)
    assert len(spans) == 4, spans
    (server,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    clients = sorted(
        (s for s in spans if s.kind == Span.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano
    )
    assert len(clients) == 3
    # One trace, continuing the client's; the attempts are siblings under the server span.
    assert {s.trace_id.hex() for s in spans} == {CLIENT_TRACE}
    assert server.parent_span_id.hex() == CLIENT_SPAN
    assert all(c.parent_span_id == server.span_id for c in clients)
    assert len({c.span_id for c in clients}) == 3
    assert {r["service.name"] for r in receiver.resources} == {"gw-test"}

    sa = attrs(server)
    assert server.name == "POST /v1/chat/completions"
    assert sa["http.response.status_code"] == 200
    assert sa["gen_ai.request.model"] == "a"
    assert sa["gen_ai.operation.name"] == "chat"
    assert sa["gatewayd.request_id"] == "trace-req-1"
    assert sa["gatewayd.attempts"] == 3 and sa["gatewayd.fallback"] == "b"

    first, retry, fallback = (attrs(c) for c in clients)
    for a, model in ((first, "model-a"), (retry, "model-a"), (fallback, "model-b")):
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == model
        assert a["gen_ai.request.max_tokens"] == 50
        assert a["server.address"] == "127.0.0.1"
    assert clients[0].name == "chat model-a" and clients[2].name == "chat model-b"
    for a in (first, retry):
        assert a["error.type"] == "503" and a["http.response.status_code"] == 503
    assert clients[0].status.code == clients[0].status.STATUS_CODE_ERROR
    assert "error.type" not in fallback
    reply = body
    assert fallback["gen_ai.response.model"] == reply["model"]
    assert fallback["gen_ai.usage.input_tokens"] == reply["usage"]["prompt_tokens"]
    assert fallback["gen_ai.usage.output_tokens"] == reply["usage"]["completion_tokens"]
    assert fallback["gen_ai.response.finish_reasons"] == ["stop"]

    # Each attempt sent its own span's context upstream, and the request id.
    sent = [*upstream.requests, *upstream2.requests]
    assert [r.headers["traceparent"] for r in sent] == [
        f"00-{CLIENT_TRACE}-{c.span_id.hex()}-01" for c in clients
    ]
    assert {r.headers["x-request-id"] for r in sent} == {"trace-req-1"}
    # No secret, and no prompt or completion text unless asked for.
    exported = b"".join(receiver.raw)
    for secret in (UPSTREAM_KEY, MASTER_KEY, PROMPT, reply["choices"][0]["message"]["content"]):
        assert secret.encode() not in exported
    assert "gen_ai.input.messages" not in first


def test_stream_span_has_first_token_event_and_usage(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, receiver: Receiver
) -> None:
    gw = gateway(_traced(receiver, upstream, upstream2), env=FAST_EXPORT)
    upstream.enqueue(Stream(events=4))
    status, _, body = raw(
        gw.port,
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {**CHAT, "model": "a", "stream": True, "stream_options": {"include_usage": True}}
        ).encode(),
        {"authorization": f"Bearer {MASTER_KEY}", "content-type": "application/json"},
    )
    assert status == 200 and b"[DONE]" in body
    spans = receiver.wait_for(2)
    (server,) = [s for s in spans if s.kind == Span.SPAN_KIND_SERVER]
    (client,) = [s for s in spans if s.kind == Span.SPAN_KIND_CLIENT]
    assert client.parent_span_id == server.span_id and client.trace_id == server.trace_id
    assert server.parent_span_id == b""  # no traceparent from the client: a new trace
    a = attrs(client)
    assert a["gen_ai.request.stream"] is True
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.model"]
    (event,) = [e for e in client.events if e.name == "gen_ai.first_token"]
    ttft = {x.key: _value(x.value) for x in event.attributes}["gen_ai.server.time_to_first_token"]
    assert 0 <= ttft < 60
    assert client.start_time_unix_nano <= event.time_unix_nano <= client.end_time_unix_nano
    assert any(e.name == "gen_ai.first_token" for e in server.events)


def test_content_is_recorded_only_when_enabled(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, receiver: Receiver
) -> None:
    gw = gateway(_traced(receiver, upstream, upstream2, capture_content=True), env=FAST_EXPORT)
    status, _, reply = post(
        gw.port,
        "/v1/chat/completions",
        {"model": "a", "messages": [{"role": "user", "content": PROMPT}]},
        {"authorization": f"Bearer {MASTER_KEY}"},
    )
    assert status == 200
    spans = receiver.wait_for(2)
    (client,) = [attrs(s) for s in spans if s.kind == Span.SPAN_KIND_CLIENT]
    assert PROMPT in client["gen_ai.input.messages"]
    assert reply["choices"][0]["message"]["content"] in client["gen_ai.output.messages"]
    assert UPSTREAM_KEY.encode() not in b"".join(receiver.raw)


def test_sample_ratio_zero_exports_nothing_and_still_propagates(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, receiver: Receiver
) -> None:
    gw = gateway(_traced(receiver, upstream, upstream2, sample_ratio=0), env=FAST_EXPORT)
    status, _, _ = post(
        gw.port,
        "/v1/chat/completions",
        {**CHAT, "model": "a"},
        {"authorization": f"Bearer {MASTER_KEY}"},
    )
    assert status == 200
    tp = upstream.last_request.headers["traceparent"]
    # Not sampled (flag bit 0 clear), yet the upstream still gets a trace to join.
    assert tp.startswith("00-") and int(tp[-2:], 16) & 1 == 0
    time.sleep(0.5)  # several export intervals: nothing may arrive
    assert receiver.spans == []


def test_receiver_down_requests_unaffected_and_memory_bounded(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    config = {
        "model_list": [openai_entry("a", upstream)],
        "general_settings": {"otel": {"endpoint": dead}},
    }
    small_queue = {"OTEL_BSP_MAX_QUEUE_SIZE": "64", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "32"}
    gw = gateway(config, env={**FAST_EXPORT, **small_queue})
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    body = json.dumps({**CHAT, "model": "a"})

    def burst(n: int) -> None:
        for _ in range(n):
            conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200 and resp.getheader("x-request-id")

    try:
        burst(300)  # fills the span queue: from here on spans are dropped
        warm = gw.rss_kib()
        burst(600)
        grown = gw.rss_kib() - warm
    finally:
        conn.close()
    # 1200 more spans held (a few KiB each) would show as megabytes.
    assert grown < 2048, f"RSS grew {grown} KiB"
    log = gw.log()
    assert "Queue full" in log  # the bound at work, said once a minute, not once per span
    assert log.count("Queue full") <= 2
    assert raw(gw.port, "GET", "/health/liveness")[0] == 200
