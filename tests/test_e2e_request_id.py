"""x-request-id: the client's (or a minted one) on every response, upstream, in the log."""

from __future__ import annotations

import re
import time
import uuid

from conftest import MASTER_KEY, GatewayFactory, openai_entry
from test_e2e_api import CHAT, post, raw

from gatewayd.testing import FakeUpstream, Stream

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _log_has(gw: object, needle: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in gw.log():  # type: ignore[attr-defined]
            return True
        time.sleep(0.05)
    return False


def test_client_request_id_travels_everywhere(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("a", upstream)]})
    status, headers, _ = post(
        gw.port,
        "/v1/chat/completions",
        {**CHAT, "model": "a"},
        {"x-request-id": "req-Abc_123:x", "traceparent": TRACEPARENT},
    )
    assert status == 200
    assert headers["x-request-id"] == "req-Abc_123:x"
    got = upstream.last_request.headers
    assert got["x-request-id"] == "req-Abc_123:x"
    # Tracing is off: the client's trace context passes through unchanged.
    assert got["traceparent"] == TRACEPARENT
    assert _log_has(gw, "request_id=req-Abc_123:x")
    line = next(x for x in gw.log().splitlines() if "request_id=req-Abc_123:x" in x)
    assert "alias=a" in line and " 200 " in line


def test_a_request_id_is_minted_when_missing_or_unsafe(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("a", upstream)]})
    _, headers, _ = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})
    minted = headers["x-request-id"]
    assert uuid.UUID(minted).version == 4
    assert upstream.last_request.headers["x-request-id"] == minted
    for bad in ("has space", "x" * 200, "a\tb", "é"):
        _, h, _ = raw(
            gw.port,
            "GET",
            "/health/liveness",
            headers={"x-request-id": bad},
        )
        assert h["x-request-id"] != bad and uuid.UUID(h["x-request-id"])


def test_every_response_carries_the_request_id(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("a", upstream)],
            "general_settings": {"master_key": MASTER_KEY},
        }
    )
    auth = {"authorization": f"Bearer {MASTER_KEY}"}
    cases = [
        ("GET", "/health", None, {}),
        ("GET", "/health/readiness", None, {}),
        ("GET", "/metrics", None, {}),
        ("GET", "/no/such/path", None, {}),
        ("POST", "/v1/chat/completions", b"{}", {}),  # 401
        ("POST", "/v1/chat/completions", b"not json", auth),  # 400
        ("POST", "/v1/chat/completions", b'{"model": "nope", "messages": []}', auth),  # 404
        ("PUT", "/v1/models", None, auth),  # 405
    ]
    seen = set()
    for i, (method, path, body, extra) in enumerate(cases):
        rid = f"case-{i}"
        status, headers, _ = raw(gw.port, method, path, body, {**extra, "x-request-id": rid})
        assert headers.get("x-request-id") == rid, (method, path, status)
        seen.add(status)
    assert {200, 401, 400, 404, 405} <= seen
    upstream.enqueue(Stream(events=3))
    status, headers, body = raw(
        gw.port,
        "POST",
        "/v1/chat/completions",
        b'{"model": "a", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}',
        {**auth, "x-request-id": "stream-1", "content-type": "application/json"},
    )
    assert status == 200 and b"[DONE]" in body
    assert headers["x-request-id"] == "stream-1"
    assert upstream.last_request.headers["x-request-id"] == "stream-1"
    assert re.search(r"request_id=stream-1\b", gw.log()) or _log_has(gw, "request_id=stream-1")


def test_anthropic_upstreams_get_the_request_id_too(gateway: GatewayFactory) -> None:
    from test_anthropic import MESSAGE, config, json_response

    with FakeUpstream(prefix="") as anthropic:
        anthropic.enqueue(json_response(MESSAGE))
        gw = gateway(config(anthropic))
        status, headers, _ = post(
            gw.port,
            "/v1/chat/completions",
            {**CHAT, "model": "claude"},
            {"x-request-id": "to-anthropic"},
        )
        assert status == 200 and headers["x-request-id"] == "to-anthropic"
        assert anthropic.requests[0].headers["x-request-id"] == "to-anthropic"


def test_a_deployments_own_header_wins(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(
        {"model_list": [openai_entry("a", upstream, headers={"x-request-id": "fixed-by-operator"})]}
    )
    _, headers, _ = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})
    sent = [(k.lower(), v) for k, v in upstream.last_request.raw_headers]
    assert [v for k, v in sent if k == "x-request-id"] == ["fixed-by-operator"]
    assert headers["x-request-id"] != "fixed-by-operator"  # the client still gets its own


def test_requests_the_http_parser_refuses_carry_one_too(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    import socket

    gw = gateway({"model_list": [openai_entry("a", upstream)]})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        data = b""
        while not data.endswith(b"}") and len(data) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.startswith("http/1.1 400")
    (line,) = [x for x in head.split("\r\n") if x.startswith("x-request-id:")]
    assert uuid.UUID(line.split(":", 1)[1].strip())
