"""A real ``redis-server`` for tests: a private instance on a free 127.0.0.1 port, with
no persistence, stopped by pid::

    with RedisServer() as redis:
        config["general_settings"]["state_store"] = redis.url
        redis.stop()   # Redis "dies" mid-test
        redis.start()  # and comes back on the same port

Needs the ``redis-server`` binary (Debian package ``redis-server``); :func:`redis_available`
says whether it is there, for skipping.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from gatewayd.testing.daemon import free_port

__all__ = ["RedisServer", "redis_available"]


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


class RedisServer:
    """One ``redis-server`` process; every wait bounded, stopped by pid."""

    def __init__(self, port: int | None = None, password: str | None = None) -> None:
        self.port = port or free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="gatewayd-redis-"))

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self._dir),
            "--daemonize",
            "no",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        log = open(self._dir / "redis.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()}")
            if self.ping():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout} s: {self.log()}")

    def ping(self) -> bool:
        """True when the server answers PING (raw RESP, no client library)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(100)
                s.sendall(b"PING\r\n")
                return s.recv(100).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args: str) -> bytes:
        """Send one command (inline form) and return the raw first reply chunk."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(100)
            s.sendall((" ".join(args) + "\r\n").encode())
            return s.recv(65536)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGKILL, to look like a crash; waits for the pid to be gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL)  # works on a stopped (paused) process too
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            pass

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing (a hung Redis)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        try:
            return (self._dir / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
