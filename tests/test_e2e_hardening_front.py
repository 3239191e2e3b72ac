"""Hardening (issue 7, front half), end to end against the installed daemon: form bodies,
non-finite numbers, Expect: 100-continue, malformed requests, auth before 404, upstream
credentials in URLs, Retry-After, the listen backlog, reload of a FIFO, the command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import MASTER_KEY, GatewayFactory, openai_entry, sdk

from gatewayd.testing import Error, FakeUpstream, free_port, run_gateway_expecting_failure
from gatewayd.testing.rawhttp import read_response

MOCK = {"model_name": "demo", "params": {"model": "mock/demo", "mock_response": "hi"}}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes, read until the server closes (or the response is complete)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_response(s, timeout, whole_response=True)


def split(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def post_json(port: int, body: bytes, *headers: str, path: str = "/v1/chat/completions") -> bytes:
    head = "".join(h + "\r\n" for h in headers)
    return exchange(
        port,
        f"POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
    )


def wait_for_log(gw: Any, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log: str = gw.log()
        if text in log:
            return log
        time.sleep(0.05)
    return str(gw.log())


# -- item 1 -----------------------------------------------------------------------------


@pytest.mark.parametrize("ctype", ["multipart/form-data", "multipart/form-data; boundary=xyz"])
def test_json_sent_as_multipart_is_answered_and_logged(gateway: GatewayFactory, ctype: str) -> None:
    gw = gateway({"model_list": [MOCK]})
    out = post_json(gw.port, json.dumps(CHAT).encode(), f"Content-Type: {ctype}")
    status, _headers, body = split(out)
    assert status == 200, out
    assert json.loads(body)["choices"][0]["message"]["content"] == "hi"
    log = wait_for_log(gw, '"POST /v1/chat/completions" 200')
    assert '"POST /v1/chat/completions" 200 alias=demo' in log


# -- item 2 -----------------------------------------------------------------------------


def test_a_non_finite_number_is_a_400_and_never_reaches_the_upstream(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("main", upstream)]})
    body = (
        b'{"model": "main", "messages": [{"role": "user", "content": "x"}], "temperature": 1e999}'
    )
    status, _headers, data = split(post_json(gw.port, body, "Content-Type: application/json"))
    assert status == 400
    error = json.loads(data)["error"]
    assert error["type"] == "invalid_request_error" and "1e999" in error["message"]
    assert upstream.count() == 0


# -- item 3 -----------------------------------------------------------------------------


def test_expect_continue_over_the_limit_is_refused_before_the_upload(
    gateway: GatewayFactory,
) -> None:
    gw = gateway({"model_list": [MOCK], "general_settings": {"max_request_body_size": 1000}})
    out = exchange(
        gw.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: 50000000\r\n\r\n",
    )
    assert b"100 Continue" not in out
    status, _headers, body = split(out)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"
    assert "413" in wait_for_log(gw, '"POST /v1/chat/completions" 413')


# -- siblings of 1: Twisted's bare 400s -------------------------------------------------------


def test_malformed_request_gets_json_400_and_an_access_log_line(gateway: GatewayFactory) -> None:
    gw = gateway({"model_list": [MOCK]})
    out = exchange(gw.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nno colon\r\n\r\n")
    status, headers, body = split(out)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    out = exchange(
        gw.port,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    assert split(out)[0] == 400
    log = wait_for_log(gw, '"POST /v1/chat/completions" 400')
    assert '"POST /v1/chat/completions" 400' in log


# -- item 11 ----------------------------------------------------------------------------


def test_wrong_key_on_an_unknown_path_is_401_not_404(gateway: GatewayFactory) -> None:
    gw = gateway({"model_list": [MOCK], "general_settings": {"master_key": MASTER_KEY}})
    for path in ("/nothing/here", "/v1/nope", "/v1", "/", "/health/nope"):
        out = exchange(
            gw.port,
            f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n".encode(),
        )
        status, _, body = split(out)
        assert status == 401, path
        assert json.loads(body)["error"]["type"] == "authentication_error"
        out = exchange(
            gw.port,
            f"GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {MASTER_KEY}\r\nConnection: close\r\n\r\n".encode(),
        )
        assert split(out)[0] == 404, path
    for path in (
        "/health/liveliness",
        "/health/liveness",
        "/health/readiness",
        "/health",
        "/metrics",
    ):
        out = exchange(
            gw.port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        assert split(out)[0] == 200, path


# -- item 12 ----------------------------------------------------------------------------


def test_credentials_in_api_base_are_refused_at_start_without_printing_them() -> None:
    port = free_port()
    code, output = run_gateway_expecting_failure(
        {
            "model_list": [
                {
                    "model_name": "x",
                    "params": {
                        "model": "openai/m",
                        "api_base": f"http://bob:pa55w0rd-SECRET@127.0.0.1:{port}/v1",
                    },
                }
            ]
        }
    )
    assert code == 2
    assert "model_list[0].params.api_base" in output
    assert "pa55w0rd" not in output


# -- item 13 ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-3"])
def test_retry_after_zero_reaches_the_client_as_at_least_one(
    gateway: GatewayFactory, upstream: FakeUpstream, value: str
) -> None:
    gw = gateway({"model_list": [openai_entry("main", upstream)]})
    upstream.enqueue(Error(429, headers={"Retry-After": value}))
    client = sdk(gw.base_url)
    raw = client.chat.completions.with_raw_response
    import openai

    with pytest.raises(openai.RateLimitError) as info:
        raw.create(model="main", messages=[{"role": "user", "content": "x"}])
    assert info.value.response.headers["retry-after"] == "1"


# -- item 6 -----------------------------------------------------------------------------


def test_unquoted_numeric_api_key_is_sent_as_written(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    text = (
        "model_list:\n  - model_name: main\n    params:\n      model: openai/m\n"
        f"      api_base: {upstream.url}\n      api_key: 0123\n"
    )
    gw = gateway(text)
    sdk(gw.base_url).chat.completions.create(
        model="main", messages=[{"role": "user", "content": "x"}]
    )
    assert upstream.last_request is not None
    assert upstream.last_request.headers["authorization"] == "Bearer 0123"


# -- item 7 -----------------------------------------------------------------------------


def test_empty_master_key_refuses_to_start() -> None:
    code, output = run_gateway_expecting_failure(
        "model_list: [{model_name: a, params: {model: mock/a}}]\ngeneral_settings:\n  master_key:\n"
    )
    assert code == 2 and "general_settings.master_key" in output


# -- item 8 -----------------------------------------------------------------------------


def test_litellm_keys_not_honoured_are_warned_about(gateway: GatewayFactory) -> None:
    gw = gateway(
        {
            "model_list": [MOCK],
            "litellm_settings": {"alerting": ["slack"], "success_callback": ["langfuse"]},
            "router_settings": {"retry_policy": {"TimeoutErrorRetries": "pw-SECRET"}},
        }
    )
    log = gw.log()
    for key in (
        "litellm_settings.alerting",
        "litellm_settings.success_callback",
        "router_settings.retry_policy",
    ):
        assert key in log
    assert "pw-SECRET" not in log


# -- item 4 -----------------------------------------------------------------------------


def _listen_backlog(port: int) -> int | None:
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("ss (iproute2) is not installed")
    out = subprocess.run(
        [ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10, check=True
    ).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            return int(fields[2])  # Send-Q of a listening socket: its backlog
    return None


def _somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text().strip())


def test_listen_backlog_reaches_the_socket(gateway: GatewayFactory) -> None:
    want = min(700, _somaxconn())
    gw = gateway({"model_list": [MOCK], "general_settings": {"listen_backlog": want}})
    assert _listen_backlog(gw.port) == want
    gw2 = gateway(
        {"model_list": [MOCK]}, extra_args=["--backlog", str(min(333, want))], use_cli=True
    )
    assert _listen_backlog(gw2.port) == min(333, want)


# -- item 5 -----------------------------------------------------------------------------


def test_sighup_on_a_fifo_config_keeps_serving_and_says_why(gateway: GatewayFactory) -> None:
    gw = gateway({"model_list": [MOCK]})
    path = gw.config_path
    path.unlink()
    os.mkfifo(path)
    gw.send_signal(signal.SIGHUP)
    log = wait_for_log(gw, "reload failed")
    assert "reload failed" in log and "regular file" in log
    out = post_json(gw.port, json.dumps(CHAT).encode(), "Content-Type: application/json")
    assert split(out)[0] == 200


def test_a_fifo_config_at_start_exits_2(tmp_path: Path) -> None:
    fifo = tmp_path / "gw.yaml"
    os.mkfifo(fifo)
    code, output = run_gateway_expecting_failure(fifo)
    assert code == 2 and "regular file" in output


# -- item 10 ----------------------------------------------------------------------------


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    import sys

    bindir = Path(sys.executable).parent
    return subprocess.run(
        [str(bindir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("prog", [["gatewayd"], ["twistd", "-n", "gateway"]])
def test_help_names_the_program_and_a_bad_port_is_one_line(prog: list[str]) -> None:
    helped = _run([*prog, "--help"])
    assert helped.returncode == 0
    first = helped.stdout.splitlines()[0]
    assert first.startswith("Usage: ") and ("gatewayd" in first or "twistd" in first), first
    bad = _run([*prog, "-c", "x.yaml", "-p", "abc"])
    assert bad.returncode != 0
    assert "Options:" not in bad.stdout + bad.stderr
    assert "port" in bad.stderr


@pytest.mark.parametrize("use_cli", [False, True])
def test_port_in_use_is_said_once(use_cli: bool) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, output = run_gateway_expecting_failure(
            {"model_list": [MOCK]}, extra_args=["-p", str(port)], use_cli=use_cli
        )
    assert code == 1
    assert output.count("cannot listen on") == 1, output
