"""The daemon under systemd: sd_notify states and socket activation."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXAMPLE_CONFIG, GatewayFactory
from test_e2e_api import CHAT, post

from gatewayd.testing import run_gateway_expecting_failure

TWISTD = str(Path(sys.executable).parent / "twistd")


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "notify")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.settimeout(10)
        try:
            yield s, path
        finally:
            s.close()


def recv_until(s: socket.socket, wanted: str, limit: float = 10) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = s.recv(4096).decode()
        except TimeoutError:
            break
        got.append(msg)
        if wanted in msg:
            return got
    raise AssertionError(f"never got {wanted!r}; got {got}")


def test_notify_ready_reloading_stopping(
    gateway: GatewayFactory, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    gw = gateway(EXAMPLE_CONFIG, env={"NOTIFY_SOCKET": path})
    recv_until(sock, "READY=1")
    gw.send_signal(signal.SIGHUP)
    msgs = recv_until(sock, "READY=1")
    assert any("RELOADING=1" in m and "MONOTONIC_USEC=" in m for m in msgs), msgs
    gw.send_signal(signal.SIGTERM)
    recv_until(sock, "STOPPING=1")


def test_socket_activation(tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    log = open(tmp_path / "log", "wb")
    # systemd passes the socket as fd 3 with LISTEN_FDS=1, LISTEN_FDNAMES and LISTEN_PID=<pid>.
    command = (
        f'LISTEN_PID=$$ exec "{TWISTD}" -n --pidfile= gateway -c "{EXAMPLE_CONFIG}" '
        "--listen systemd:domain=INET:index=0"
    )
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        env={**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "gatewayd.socket"},
        close_fds=False,
        preexec_fn=lambda: os.dup2(listener.fileno(), 3),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        listener.close()  # only the daemon holds it now
        deadline = time.monotonic() + 20
        status = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, _, body = post(port, "/v1/chat/completions", {**CHAT, "model": "demo"})
                break
            except OSError:
                time.sleep(0.1)
        assert status == 200, (tmp_path / "log").read_text()
        assert body["object"] == "chat.completion"
        assert json.dumps(body)
        assert "listening on" in (tmp_path / "log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_bad_listen_endpoint_is_one_clear_line() -> None:
    code, output = run_gateway_expecting_failure(
        EXAMPLE_CONFIG,
        extra_args=["--listen", "systemd:domain=INET:index=0"],
        unset_env=["LISTEN_FDS"],
    )
    assert code != 0
    assert "cannot use listen endpoint" in output and "Traceback" not in output
    code, output = run_gateway_expecting_failure(EXAMPLE_CONFIG, extra_args=["--listen", "bogus:x"])
    assert code != 0 and "cannot use listen endpoint" in output and "Traceback" not in output
