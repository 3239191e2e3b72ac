"""End to end: the real daemon (twistd -n gateway) on a real socket, driven by the
official openai SDK and raw HTTP, in front of fake upstreams that speak OpenAI's wire format."""

from __future__ import annotations

import http.client
import json
import signal
import time
from typing import Any

import openai
import pytest
from conftest import EXAMPLE_CONFIG, MASTER_KEY, UPSTREAM_KEY, GatewayFactory, openai_entry
from conftest import sdk as client

from gatewayd.testing import (
    ContextLengthError,
    Error,
    FakeUpstream,
    Hang,
    Stream,
    closed_port,
    run_gateway_expecting_failure,
)


def raw(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def post(
    port: int, path: str, payload: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    h = {"content-type": "application/json", **(headers or {})}
    status, hdrs, body = raw(port, "POST", path, json.dumps(payload).encode(), h)
    return status, hdrs, json.loads(body)


def assert_openai_error(body: Any) -> dict[str, Any]:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"]
    return err  # type: ignore[no-any-return]


CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}


# -- the shipped example: answers with no model server ----------------------------


def test_example_config_answers_from_demo_with_the_sdk(gateway: GatewayFactory) -> None:
    gw = gateway(EXAMPLE_CONFIG)
    c = client(gw.base_url)
    reply = c.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.content and "gatewayd" in reply.choices[0].message.content
    chunks = list(
        c.chat.completions.create(
            model="demo",
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    emb = c.embeddings.create(model="demo", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    comp = c.completions.create(model="demo", prompt="Say hi")
    assert comp.choices[0].text
    ids = {m.id for m in c.models.list()}
    assert {"demo", "smollm2", "llama3"} <= ids


def test_example_config_falls_back_to_demo_when_no_local_server(gateway: GatewayFactory) -> None:
    gw = gateway(EXAMPLE_CONFIG)
    status, headers, body = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "llama3"})
    # Nothing listens on Ollama's port here: the fallback answers.
    assert status == 200, body
    assert headers["x-gatewayd-fallback"] == "demo"
    assert headers["x-gatewayd-model"] == "demo"
    assert body["object"] == "chat.completion"


# -- pass-through to an OpenAI-compatible upstream ---------------------------------


def test_chat_passes_through_both_ways(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway({"model_list": [openai_entry("fast", upstream, "gpt-up")]})
    c = client(gw.base_url)
    resp = c.chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "Hi ünïcode"}],
        max_completion_tokens=50,
        extra_body={"x_custom": {"nested": [1, 2.5, None]}, "logprobs": True},
    )
    reply = resp.parse()
    assert reply.choices[0].message.content == "Hello from fake upstream"
    # Unknown fields of the upstream's response are kept.
    assert json.loads(resp.text)["x_fake_extra"] == {"kept": True}
    assert resp.headers["x-gatewayd-model"] == "fast"
    assert resp.headers["x-gatewayd-attempts"] == "1"
    assert "x-gatewayd-fallback" not in resp.headers
    assert UPSTREAM_KEY not in resp.headers["x-gatewayd-deployment"]
    req = upstream.last_request
    assert req.method == "POST" and req.bare_path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    sent = req.json()
    assert sent["model"] == "gpt-up"
    assert sent["messages"] == [{"role": "user", "content": "Hi ünïcode"}]
    assert sent["max_completion_tokens"] == 50
    assert sent["x_custom"] == {"nested": [1, 2.5, None]}
    assert sent["logprobs"] is True


def test_stream_relays_events_and_usage(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway({"model_list": [openai_entry("fast", upstream)]})
    c = client(gw.base_url)
    chunks = list(
        c.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "Hello from fake upstream"
    assert chunks[-1].usage is not None
    assert upstream.last_request.json()["stream_options"] == {"include_usage": True}


def test_first_event_arrives_before_the_upstream_finishes(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Stream(events=6, interval=0.4))
    gw = gateway({"model_list": [openai_entry("slow", upstream)]})
    c = client(gw.base_url)
    start = time.monotonic()
    stream = c.chat.completions.create(
        model="slow", messages=[{"role": "user", "content": "x"}], stream=True
    )
    arrivals = []
    upstream_done_at_first = None
    for _ in stream:
        arrivals.append(time.monotonic() - start)
        if upstream_done_at_first is None:
            upstream_done_at_first = upstream.wait_for_streams(1)[0].finished
    # The first chunk must not wait for the end: the upstream is still writing when it
    # arrives (its own progress, not a time bound a busy machine could miss).
    assert upstream_done_at_first is False, arrivals
    assert arrivals[-1] >= 2.0, arrivals


def test_embeddings_completions_and_models(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway({"model_list": [openai_entry("emb", upstream, "text-embedding-3-small")]})
    c = client(gw.base_url)
    emb = c.embeddings.create(model="emb", input="hello")
    assert len(emb.data) == 1 and len(emb.data[0].embedding) > 0
    assert upstream.last_request.bare_path == "/v1/embeddings"
    comp = c.completions.create(model="emb", prompt="hi")
    assert comp.choices[0].text
    assert upstream.last_request.bare_path == "/v1/completions"
    assert [m.id for m in c.models.list()] == ["emb"]
    assert c.models.retrieve("emb").id == "emb"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("nope")


def test_bare_paths_without_v1(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway({"model_list": [openai_entry("fast", upstream)]})
    status, _, body = post(gw.port, "/chat/completions", {**CHAT, "model": "fast"})
    assert status == 200 and body["object"] == "chat.completion"
    status, _, data = raw(gw.port, "GET", "/models")
    assert status == 200 and json.loads(data)["data"][0]["id"] == "fast"


# -- the client's mistakes ------------------------------------------------------


def test_client_errors_in_openai_shape(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("fast", upstream)],
            "general_settings": {"max_request_body_size": 10_000},
        }
    )
    p = gw.port
    status, _, body = raw(
        p, "POST", "/v1/chat/completions", b"{not json", {"content-type": "application/json"}
    )
    assert (
        status == 400 and assert_openai_error(json.loads(body))["type"] == "invalid_request_error"
    )
    status, _, obj = post(p, "/v1/chat/completions", [1, 2])
    assert status == 400 and assert_openai_error(obj)
    status, _, obj = post(p, "/v1/chat/completions", {"messages": []})
    assert status == 400 and assert_openai_error(obj)["param"] == "model"
    status, _, obj = post(p, "/v1/chat/completions", {**CHAT, "model": "nope"})
    assert status == 404 and assert_openai_error(obj)["code"] == "model_not_found"
    status, _, data = raw(p, "GET", "/v1/nowhere")
    assert status == 404 and assert_openai_error(json.loads(data))
    status, headers, data = raw(p, "GET", "/v1/chat/completions")
    assert status == 405 and assert_openai_error(json.loads(data))
    assert "POST" in headers["allow"]
    big = json.dumps({**CHAT, "model": "fast", "pad": "x" * 20_000}).encode()
    status, _, data = raw(
        p, "POST", "/v1/chat/completions", big, {"content-type": "application/json"}
    )
    assert status == 413 and assert_openai_error(json.loads(data))
    assert upstream.count() == 0
    # The daemon is still fine.
    status, _, obj = post(p, "/v1/chat/completions", {**CHAT, "model": "fast"})
    assert status == 200


def test_master_key(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("fast", upstream)],
            "general_settings": {"master_key": "os.environ/GW_KEY"},
        },
        env={"GW_KEY": MASTER_KEY},
    )
    p = gw.port
    payload = {**CHAT, "model": "fast"}
    status, _headers, obj = post(p, "/v1/chat/completions", payload)
    assert status == 401 and assert_openai_error(obj)["type"] == "authentication_error"
    status, _, obj = post(p, "/v1/chat/completions", payload, {"authorization": "Bearer wrong"})
    assert status == 401 and MASTER_KEY not in json.dumps(obj)
    for h in (
        {"authorization": f"Bearer {MASTER_KEY}"},
        {"x-api-key": MASTER_KEY},
        {"api-key": MASTER_KEY},
    ):
        status, _, obj = post(p, "/v1/chat/completions", payload, h)
        assert status == 200, (h, obj)
    assert raw(p, "GET", "/v1/models")[0] == 401
    for path in ("/health/liveliness", "/health/liveness", "/health/readiness", "/health"):
        assert raw(p, "GET", path)[0] == 200, path
    with pytest.raises(openai.AuthenticationError):
        client(gw.base_url, "nope").models.list()
    assert client(gw.base_url, MASTER_KEY).models.list().data[0].id == "fast"
    # The master key never reaches the upstream.
    assert all(MASTER_KEY not in json.dumps(dict(r.headers)) for r in upstream.requests)
    log = gw.log()
    assert MASTER_KEY not in log and UPSTREAM_KEY not in log


# -- upstream failures ---------------------------------------------------------


def test_upstream_client_error_passes_through_after_one_call(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(
        Error(400, "bad temperature", "invalid_request_error", "bad_param", "temperature")
    )
    gw = gateway(
        {"model_list": [openai_entry("fast", upstream)], "general_settings": {"num_retries": 3}}
    )
    status, headers, obj = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "fast"})
    assert status == 400
    assert obj == {
        "error": {
            "message": "bad temperature",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "bad_param",
        }
    }
    assert upstream.count() == 1
    assert headers["x-gatewayd-attempts"] == "1"


def test_transient_errors_retried_then_success(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.enqueue(Error(503), Error(500))
    gw = gateway(
        {"model_list": [openai_entry("fast", upstream)], "general_settings": {"num_retries": 2}}
    )
    status, headers, _obj = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "fast"})
    assert status == 200 and headers["x-gatewayd-attempts"] == "3"
    assert upstream.count() == 3


def test_connection_refused_is_502_and_timeout_is_504(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    upstream.set_default(Hang(10))
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    gw = gateway(
        {
            "model_list": [
                {
                    "model_name": "dead",
                    "params": {"model": "openai/x", "api_base": dead, "api_key": UPSTREAM_KEY},
                },
                openai_entry("slow", upstream, timeout=0.5),
            ]
        }
    )
    status, _, obj = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "dead"})
    assert status == 502 and assert_openai_error(obj)
    assert dead not in obj["error"]["message"] or UPSTREAM_KEY not in obj["error"]["message"]
    start = time.monotonic()
    status, _, obj = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "slow"})
    assert status == 504 and assert_openai_error(obj)
    assert time.monotonic() - start < 8  # the upstream hangs 10 s: the 0.5 s timeout cut it


def test_fallback_on_failure_and_context_window(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("a", upstream), openai_entry("b", upstream2, "model-b")],
            "general_settings": {
                "fallbacks": [{"a": ["b"]}],
                "context_window_fallbacks": [{"a": ["b"]}],
            },
        }
    )
    upstream.enqueue(Error(500))
    status, headers, _ = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})
    assert (
        status == 200
        and headers["x-gatewayd-fallback"] == "b"
        and headers["x-gatewayd-model"] == "b"
    )
    assert upstream2.last_request.json()["model"] == "model-b"
    upstream.enqueue(ContextLengthError())
    status, headers, _obj = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})
    assert status == 200 and headers["x-gatewayd-fallback"] == "b"


# -- configuration and lifecycle -----------------------------------------------


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("model_list: 3\n", "model_list"),
        (
            "model_list:\n  - model_name: a\n    params: {model: nope}\n",
            "model_list[0].params.model",
        ),
        (
            "model_list:\n  - model_name: a\n    params: {model: openai/x, api_key: os.environ/GW_UNSET_VAR}\n",
            "GW_UNSET_VAR",
        ),
        (
            "model_list:\n  - model_name: a\n    params: {model: mock/x}\n"
            "general_settings:\n  fallbacks: [{a: [ghost]}]\n",
            "ghost",
        ),
        (
            "model_list:\n  - model_name: a\n    params: {model: mock/x}\n"
            "general_settings:\n  master_key: os.environ/GW_UNSET_VAR\n",
            "master_key",
        ),
    ],
)
def test_bad_config_refuses_to_start(config: str, needle: str) -> None:
    code, output = run_gateway_expecting_failure(config, unset_env=["GW_UNSET_VAR"])
    assert code != 0
    assert needle in output
    assert "Traceback" not in output


def test_console_script_runs_too(gateway: GatewayFactory) -> None:
    gw = gateway(EXAMPLE_CONFIG, use_cli=True)
    status, _, obj = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "demo"})
    assert status == 200 and obj["choices"][0]["message"]["content"]


def test_sighup_reloads_and_a_bad_reload_keeps_the_old_config(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("one", upstream)]})
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "one"})[0] == 200
    connections = upstream.connections_opened
    gw.write_config({"model_list": [openai_entry("one", upstream), openai_entry("two", upstream)]})
    gw.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, _, data = raw(gw.port, "GET", "/v1/models")
        if {m["id"] for m in json.loads(data)["data"]} == {"one", "two"}:
            break
        time.sleep(0.1)
    else:
        pytest.fail("reload did not take effect")
    # The pooled connection to the unchanged upstream survived the reload.
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "one"})[0] == 200
    assert upstream.connections_opened == connections
    gw.write_config("model_list: [")
    gw.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload failed" not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "reload failed" in gw.log()
    status, _, _obj = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "two"})
    assert status == 200


def test_hostile_input_gets_clean_errors(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway({"model_list": [openai_entry("fast", upstream)]})
    p = gw.port
    hdrs = {"content-type": "application/json"}
    nested = b"[" * 100_000 + b"]" * 100_000
    status, _, data = raw(p, "POST", "/v1/chat/completions", nested, hdrs)
    assert status == 400 and assert_openai_error(json.loads(data))
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"model": "fast", "temperature": ' + constant + b', "messages": []}'
        status, _, data = raw(p, "POST", "/v1/chat/completions", body, hdrs)
        assert status == 400 and assert_openai_error(json.loads(data))
    status, headers, data = raw(p, "HEAD", "/v1/chat/completions")
    assert status == 405 and "POST" in headers["allow"]
    assert raw(p, "HEAD", "/v1/models")[0] == 200
    # A lone surrogate is legal JSON text: it reaches the upstream escaped, not as a 500.
    body = b'{"model": "fast", "messages": [{"role": "user", "content": "\\ud800"}]}'
    status, _, data = raw(p, "POST", "/v1/chat/completions", body, hdrs)
    assert status == 200, data
    assert b"\\ud800" in upstream.last_request.body
    assert "Traceback" not in gw.log() and "internal error" not in gw.log()


def test_cors_is_off_by_default_and_opt_in(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    origin = {"origin": "https://chat.example.com"}
    gw = gateway({"model_list": [openai_entry("fast", upstream)]})
    _, headers, _ = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "fast"}, origin)
    assert "access-control-allow-origin" not in headers
    gw2 = gateway(
        {
            "model_list": [openai_entry("fast", upstream)],
            "general_settings": {
                "master_key": MASTER_KEY,
                "cors_allow_origins": ["https://chat.example.com"],
            },
        }
    )
    preflight = {
        **origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    status, headers, _ = raw(gw2.port, "OPTIONS", "/v1/chat/completions", headers=preflight)
    assert status == 204  # no key needed for a preflight
    assert headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "authorization, content-type"
    status, headers, _ = post(
        gw2.port,
        "/v1/chat/completions",
        {**CHAT, "model": "fast"},
        {**origin, "authorization": f"Bearer {MASTER_KEY}"},
    )
    assert status == 200 and headers["access-control-allow-origin"] == "https://chat.example.com"
    assert "x-gatewayd-model" in headers["access-control-expose-headers"]
    _, headers, _ = post(
        gw2.port,
        "/v1/chat/completions",
        {**CHAT, "model": "fast"},
        {"origin": "https://evil.example", "authorization": f"Bearer {MASTER_KEY}"},
    )
    assert "access-control-allow-origin" not in headers
