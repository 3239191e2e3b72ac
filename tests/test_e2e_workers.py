"""``--workers N``: a supervisor holding the socket and worker processes accepting on it.

Real processes throughout: the daemon is started as users start it, worker pids are read
from ``/proc`` and from the ``x-gatewayd-worker`` response header, and every pid a test
sees is checked to be gone at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import UPSTREAM_KEY, GatewayFactory, openai_entry
from test_e2e_api import CHAT, raw
from test_e2e_systemd import recv_until

from gatewayd.testing import FakeUpstream, GatewayProcess, run_gateway_expecting_failure

TWISTD = str(Path(sys.executable).parent / "twistd")


def children(pid: int) -> set[int]:
    """The live child pids of ``pid`` (Linux /proc)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as f:
            out |= {int(p) for p in f.read().split()}
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(pred: Callable[[], bool], limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def chat(port: int, model: str) -> tuple[int, str, Any]:
    """POST a chat on a fresh connection: (status, answering worker's pid, body)."""
    status, headers, body = raw(
        port,
        "POST",
        "/v1/chat/completions",
        json.dumps({**CHAT, "model": model}).encode(),
        {"content-type": "application/json", "connection": "close"},
    )
    return status, headers.get("x-gatewayd-worker", ""), json.loads(body)


def answering_workers(port: int, model: str, want: set[int], limit: float = 30.0) -> set[int]:
    """Send requests until every pid in ``want`` answered ``model`` with 200, for at most
    ``limit`` seconds. Bounded by time, not by a count: which worker accepts is the
    kernel's choice, and on a busy machine one may answer hundreds in a row."""
    seen: set[int] = set()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status, pid, _ = chat(port, model)
        if status == 200 and pid:
            seen.add(int(pid))
        if want <= seen:
            break
    return seen


def config(upstream: FakeUpstream, *aliases: str, **general: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"model_list": [openai_entry(a, upstream) for a in aliases]}
    if general:
        c["general_settings"] = general
    return c


@pytest.fixture
def two_workers(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> Iterator[tuple[GatewayProcess, set[int]]]:
    gw = gateway(config(upstream, "a"), extra_args=["--workers", "2"])
    assert wait_until(lambda: len(children(gw.pid)) == 2), gw.log()
    pids = children(gw.pid)
    # Both workers listen once both have said so in the log.
    assert wait_until(lambda: "2 workers listening" in gw.log()), gw.log()
    yield gw, pids
    gw.stop()
    assert wait_until(lambda: not any(alive(p) for p in pids), 10), "orphaned workers"


def test_two_workers_both_answer(two_workers: tuple[GatewayProcess, set[int]]) -> None:
    gw, pids = two_workers
    assert gw.pid not in pids
    seen = answering_workers(gw.port, "a", pids)
    assert seen == pids, (seen, pids)
    status, pid, body = chat(gw.port, "a")
    assert status == 200 and body["object"] == "chat.completion" and int(pid) in pids


def test_metrics_are_summed_over_the_workers(two_workers: tuple[GatewayProcess, set[int]]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    gw, pids = two_workers
    seen: set[int] = set()
    sent = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until both workers answered at least once
        status, pid, _ = chat(gw.port, "a")
        sent += 1
        assert status == 200
        seen.add(int(pid))
        if seen == pids and sent >= 10:
            break
    assert seen == pids

    def total(text: str) -> float:
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "gatewayd_requests_total" and s.labels.get("alias") == "a"
        )

    for _ in range(6):  # whichever worker answers the scrape, it reports every request
        status, _, body = raw(gw.port, "GET", "/metrics", b"", {"connection": "close"})
        assert status == 200
        assert total(body.decode()) == sent


def test_general_settings_workers(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream, "a", workers=2))
    assert wait_until(lambda: len(children(gw.pid)) == 2), gw.log()
    assert wait_until(lambda: "2 workers listening" in gw.log()), gw.log()
    assert answering_workers(gw.port, "a", children(gw.pid)) == children(gw.pid)


def test_one_worker_is_the_plain_process(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream, "a"), extra_args=["--workers", "1"])
    status, pid, _ = chat(gw.port, "a")
    assert status == 200 and pid == ""  # no supervisor, no worker header
    assert children(gw.pid) == set()


def test_bad_worker_counts_are_refused(upstream: FakeUpstream) -> None:
    code, out = run_gateway_expecting_failure(config(upstream, "a"), extra_args=["--workers", "0"])
    assert code == 2 and "--workers must be 1-1024, got 0" in out, out
    code, out = run_gateway_expecting_failure(config(upstream, "a", workers=0))
    assert code == 2 and "general_settings.workers" in out and "Traceback" not in out, out


def test_sighup_reloads_every_worker(
    two_workers: tuple[GatewayProcess, set[int]], upstream: FakeUpstream
) -> None:
    gw, pids = two_workers
    status, _, body = chat(gw.port, "b")
    assert status != 200, body
    gw.write_config(config(upstream, "a", "b"))
    gw.send_signal(signal.SIGHUP)
    assert wait_until(lambda: gw.log().count("config reloaded") >= 2), gw.log()
    assert answering_workers(gw.port, "b", pids) == pids
    assert children(gw.pid) == pids  # reloaded in place, not restarted


def test_invalid_file_on_sighup_changes_no_worker(
    two_workers: tuple[GatewayProcess, set[int]], upstream: FakeUpstream
) -> None:
    gw, pids = two_workers
    bad = config(upstream, "a", "b", fallbacks=[{"a": ["nowhere"]}])
    gw.write_config(bad)
    gw.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "every worker keeps the running config" in gw.log()), gw.log()
    assert "config reloaded" not in gw.log()
    for _ in range(20):
        status, _, _ = chat(gw.port, "b")
        assert status != 200  # "b" of the invalid file is served by no worker
    assert answering_workers(gw.port, "a", pids) == pids
    assert children(gw.pid) == pids


def test_a_killed_worker_is_restarted(two_workers: tuple[GatewayProcess, set[int]]) -> None:
    gw, pids = two_workers
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    # Requests go on being answered (by the other worker) while the victim is replaced.
    failures = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, _, _ = chat(gw.port, "a")
        failures += status != 200
        if f"(pid {victim}) died" in gw.log():
            break
    assert failures == 0
    log = gw.log()
    assert f"(pid {victim}) died" in log and "restarting in" in log, log
    # The replacement is up once the supervisor says it listens (its READY=1): waited on
    # as an event, not guessed from /proc (a forked worker may still be importing).
    assert wait_until(lambda: " listening" in gw.log().split(f"(pid {victim}) died", 1)[1], 30)
    now = children(gw.pid)
    assert len(now) == 2 and victim not in now, gw.log()
    assert answering_workers(gw.port, "a", now) == now
    pids |= now  # the fixture checks the new one is gone at the end too


def test_sigterm_stops_everything(two_workers: tuple[GatewayProcess, set[int]]) -> None:
    gw, pids = two_workers
    metrics_dirs = {_env(p).get("PROMETHEUS_MULTIPROC_DIR") for p in pids}
    assert len(metrics_dirs) == 1 and None not in metrics_dirs
    (metrics_dir,) = metrics_dirs
    assert metrics_dir is not None and os.path.isdir(metrics_dir)
    gw.send_signal(signal.SIGTERM)
    assert gw.wait(20) in (0, -signal.SIGTERM), gw.log()
    assert not any(alive(p) for p in pids)
    assert not os.path.exists(metrics_dir) and not os.path.exists(os.path.dirname(metrics_dir))
    assert "every worker has exited" in gw.log()


def test_workers_die_with_a_killed_supervisor(
    two_workers: tuple[GatewayProcess, set[int]],
) -> None:
    gw, pids = two_workers
    private = os.path.dirname(_env(min(pids))["PROMETHEUS_MULTIPROC_DIR"])
    gw.send_signal(signal.SIGKILL)
    assert gw.wait(10) is not None
    assert wait_until(lambda: not any(alive(p) for p in pids), 15), "orphaned workers"
    shutil.rmtree(private)  # a killed supervisor cannot remove its directory


def _env(pid: int) -> dict[str, str]:
    raw_env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw_env if b"=" in e)


def test_notify_ready_once_for_all_workers(
    gateway: GatewayFactory, upstream: FakeUpstream, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    gw = gateway(config(upstream, "a"), extra_args=["--workers", "2"], env={"NOTIFY_SOCKET": path})
    msgs = recv_until(sock, "READY=1")
    # READY=1 comes from the supervisor once both workers listen; the workers' own
    # notifications (sent before it) go to the supervisor, never to systemd.
    assert "2 workers listening" in gw.log()
    sock.setblocking(False)
    try:
        while True:
            msgs.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    sock.setblocking(True)
    assert sum(m.count("READY=1") for m in msgs) == 1, msgs
    pids = children(gw.pid)
    assert len(pids) == 2 and all(_env(p).get("NOTIFY_SOCKET") != path for p in pids)
    gw.send_signal(signal.SIGHUP)
    msgs = recv_until(sock, "READY=1")
    assert any("RELOADING=1" in m for m in msgs), msgs
    gw.send_signal(signal.SIGTERM)
    recv_until(sock, "STOPPING=1")
    assert gw.wait(20) in (0, -signal.SIGTERM)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    try:
        yield s, path
    finally:
        s.close()


def test_workers_under_socket_activation(tmp_path: Path, upstream: FakeUpstream) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(json.dumps(config(upstream, "a")))
    command = (
        f'LISTEN_PID=$$ exec "{TWISTD}" -n --pidfile= gateway -c "{cfg}" '
        "--listen systemd:domain=INET:index=0 --workers 2"
    )
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            env={**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "gatewayd.socket"},
            close_fds=False,
            preexec_fn=lambda: os.dup2(listener.fileno(), 3),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    pids: set[int] = set()
    try:
        listener.close()  # only the daemon holds it now
        ok = wait_until(lambda: len(children(proc.pid)) == 2)
        assert ok, (tmp_path / "log").read_text()
        pids = children(proc.pid)
        for p in pids:
            assert "LISTEN_FDS" not in _env(p)  # only the supervisor takes systemd's socket
        assert answering_workers(port, "a", pids) == pids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert proc.returncode in (0, -signal.SIGTERM), (tmp_path / "log").read_text()
    assert not any(alive(p) for p in pids)
    assert UPSTREAM_KEY not in (tmp_path / "log").read_text()


def test_workers_through_the_gatewayd_script(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(config(upstream, "a"), extra_args=["--workers", "2"], use_cli=True)
    assert wait_until(lambda: len(children(gw.pid)) == 2), gw.log()
    pids = children(gw.pid)
    assert answering_workers(gw.port, "a", pids) == pids
    gw.stop()
    assert wait_until(lambda: not any(alive(p) for p in pids), 10), "orphaned workers"
