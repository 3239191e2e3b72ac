"""Pieces of the side-by-side benchmark: processes pinned to cores and stopped by pid,
their CPU time and peak memory from ``/proc``, nginx with fixed answers, and ``wrk``.

Everything listens on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd.testing import free_port

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
MASTER_KEY = "sk-bench-master"
#: Chunks in the fixed stream (the issue's "20-chunk stream").
STREAM_CHUNKS = 20


def chat_answer() -> str:
    """The fixed non-streamed OpenAI chat completion nginx answers with."""
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! How can I help you?"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
        }
    )


def stream_answer() -> str:
    """The fixed SSE stream: 20 content chunks (the last with usage), then ``[DONE]``."""
    events = []
    for i in range(STREAM_CHUNKS):
        chunk: dict[str, Any] = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": f"tok{i} "},
                    "finish_reason": "stop" if i == STREAM_CHUNKS - 1 else None,
                }
            ],
        }
        if i == STREAM_CHUNKS - 1:
            chunk["usage"] = {"prompt_tokens": 9, "completion_tokens": 20, "total_tokens": 29}
        events.append("data: " + json.dumps(chunk, separators=(",", ":")) + "\\n\\n")
    return "".join(events) + "data: [DONE]\\n\\n"


# -- processes ---------------------------------------------------------------------


class Proc:
    """A child process (optionally pinned with ``taskset``), stopped by pid."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        cpus: str | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        if cpus is not None:
            argv = ["taskset", "-c", cpus, *argv]
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        """This process and its descendants (Linux ``/proc/PID/task/*/children``)."""
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
        return out

    def cpu_seconds(self) -> float:
        """utime + stime of the whole tree so far."""
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / TICK

    def peak_rss_mb(self) -> float:
        """The sum of every process's peak resident set (VmHWM)."""
        kib = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        kib += int(line.split()[1])
        return kib / 1024

    def stop(self, timeout: float = 40.0) -> None:
        """SIGTERM the process (and, after it, any descendant left), SIGKILL what remains."""
        pids = self.tree()
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(10)
        for pid in pids[1:]:  # e.g. uvicorn workers of a killed parent
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def running(self) -> bool:
        return self.popen.poll() is None


def wait_http(port: int, path: str, limit: float, proc: Proc) -> None:
    """Wait (at most ``limit`` s) until ``GET path`` answers below 500."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not proc.running():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log.read_text()[-3000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {MASTER_KEY}"})
            if conn.getresponse().status < 500:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready within {limit}s:\n{proc.log.read_text()[-3000:]}")


def post_once(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    """One request, to check a target answers right before it is measured."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"}
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def start_nginx(
    name: str, template: str, directory: Path, cpus: str, **values: Any
) -> tuple[Proc, int]:
    """nginx (from the system packages) in the foreground on a config from ``template``;
    the process and its port."""
    directory.mkdir(parents=True)
    port = free_port()
    text = string.Template((HERE / template).read_text()).substitute(
        dir=directory, port=port, chat=chat_answer(), stream=stream_answer(), **values
    )
    (directory / "nginx.conf").write_text(text)
    proc = Proc(
        name,
        ["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", "stderr"],
        directory / "out.log",
        cpus,
    )
    wait_http(port, "/", 10, proc)
    return proc, port


# -- the client --------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What ``wrk`` measured in one phase, and the CPU the target spent in it."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    cpu_s: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000.0 * self.cpu_s / self.requests if self.requests else float("nan")


def wrk(
    url: str,
    body_file: Path,
    connections: int,
    seconds: float,
    cpus: str,
    target: Proc,
) -> Load:
    """Run ``wrk`` (one thread, pinned) for ``seconds``; the target's CPU over the run."""
    argv = ["taskset", "-c", cpus, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s"]
    argv += ["--timeout", "10s", "-s", str(HERE / "wrk-post.lua"), url]
    before = target.cpu_seconds()
    done = subprocess.run(
        argv,
        env={**os.environ, "BENCH_BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    )
    cpu = target.cpu_seconds() - before
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            r = json.loads(line.split(" ", 1)[1])
            return Load(
                requests=r["requests"],
                seconds=r["duration_us"] / 1e6,
                errors=r["errors"] + r["non2xx"],
                p50_ms=r["p50_us"] / 1000.0,
                p99_ms=r["p99_us"] / 1000.0,
                cpu_s=cpu,
            )
    raise RuntimeError(f"wrk gave no result:\n{done.stdout}\n{done.stderr}")
