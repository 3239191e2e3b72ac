"""Run the real gatewayd daemon as a subprocess, for end-to-end tests.

:class:`GatewayProcess` writes a config file into a private temporary directory, starts
``twistd -n gateway -c CONFIG --host 127.0.0.1 -p PORT`` (or the ``gatewayd`` console script)
with its output captured in a log file, waits until ``GET /health/readiness`` answers 200 and
stops the process by pid (SIGTERM, then SIGKILL) when done::

    with FakeUpstream() as upstream, GatewayProcess(config_for(upstream.url)) as gateway:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="k", max_retries=0)
        ...
        assert "ready" in gateway.log()

:func:`run_gateway_expecting_failure` runs the daemon on a (bad) config and returns its exit
code and output once it exits by itself.

The subprocess gets ``os.environ`` plus overrides and ``PYTHONUNBUFFERED=1``; it runs the
*installed* gatewayd (``pip install .``), so the twistd plugin is found as users find it.
Every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

__all__ = [
    "ConfigLike",
    "GatewayDidNotExit",
    "GatewayProcess",
    "GatewayStartupError",
    "free_port",
    "run_gateway_expecting_failure",
]

from gatewayd.testing.launch import (
    HOST,
    POLL,
    ConfigLike,
    GatewayDidNotExit,
    GatewayStartupError,
    command_line,
    environment,
    free_port,
    kill,
    probe,
    read_log,
    write_config_file,
)


class GatewayProcess:
    """The real gateway daemon running as a subprocess on 127.0.0.1 (a context manager).

    ``config`` is YAML text, a mapping or a path; ``extra_args`` are appended to the command
    line; ``env`` overrides and ``unset_env`` removes environment variables; ``use_cli`` runs
    the ``gatewayd`` console script instead of ``twistd -n gateway``; ``port`` defaults to a
    free port; ``startup_timeout`` bounds the wait for ``ready_path`` to answer 200.
    ``keep_files`` keeps the temporary directory (config, log) after :meth:`stop`.
    """

    def __init__(
        self,
        config: ConfigLike,
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        unset_env: Sequence[str] = (),
        use_cli: bool = False,
        port: int | None = None,
        startup_timeout: float = 60.0,
        ready_path: str = "/health/readiness",
        keep_files: bool = False,
    ) -> None:
        self._config = config
        self._extra_args = list(extra_args)
        self._env = environment(env, unset_env)
        self._use_cli = use_cli
        self._fixed_port = port
        self._startup_timeout = startup_timeout
        self._ready_path = ready_path
        self._keep_files = keep_files
        self._dir: Path | None = None
        self._config_path: Path | None = None
        self._log_path: Path | None = None
        self._log_cache = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._returncode: int | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> GatewayProcess:
        """Launch the daemon and wait until it is ready; return self.

        Raises :class:`GatewayStartupError` (with the output) if it exits first or is not ready
        within ``startup_timeout`` (it is then killed). An auto-chosen port that turns out to be
        taken is retried with another port, twice at most.
        """
        if self._proc is not None:
            raise RuntimeError("GatewayProcess can only be started once")
        self._dir = Path(tempfile.mkdtemp(prefix="gatewayd-test-"))
        self._config_path = write_config_file(self._config, self._dir)
        self._log_path = self._dir / "gateway.log"
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(attempts):
            try:
                self._launch(self._fixed_port or free_port())
                self._wait_ready()
                return self
            except GatewayStartupError as exc:
                port_taken = "address already in use" in exc.log.lower()
                if not port_taken or attempt == attempts - 1:
                    self._cleanup()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, port: int) -> None:
        assert self._dir is not None and self._config_path is not None
        assert self._log_path is not None
        self._port = port
        self._returncode = None
        command = command_line(self._config_path, port, self._extra_args, self._use_cli)
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                command,
                cwd=self._dir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None and self._port is not None
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._returncode = code
                raise GatewayStartupError(
                    f"gateway exited with code {code} before becoming ready", self.log(), code
                )
            if probe(self._port, self._ready_path):
                return
            if time.monotonic() >= deadline:
                code = self._terminate(5.0)
                raise GatewayStartupError(
                    f"gateway not ready at {self._ready_path} within {self._startup_timeout}s",
                    self.log(),
                    code,
                )
            time.sleep(POLL)

    def _terminate(self, timeout: float) -> int:
        """SIGTERM by pid, wait up to ``timeout``, then SIGKILL; return the exit code."""
        proc = self._proc
        assert proc is not None
        if proc.poll() is None:
            kill(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill(proc, signal.SIGKILL)
                proc.wait(10.0)
        self._returncode = proc.returncode
        return proc.returncode

    def stop(self, timeout: float = 10.0) -> int:
        """Stop the daemon (SIGTERM, then SIGKILL after ``timeout``) and return its exit code.

        A negative code means it died from that signal. Idempotent; the temporary directory is
        removed unless ``keep_files`` (the log stays readable through :meth:`log`).
        """
        if self._proc is None:
            raise RuntimeError("GatewayProcess was not started")
        code = self._terminate(timeout)
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._terminate(5.0)
        self._log_cache = self.log()
        if self._dir is not None and not self._keep_files:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._log_path = None

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self.stop()

    # ------------------------------------------------------------------ control

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the daemon by pid (no-op once it has exited and been reaped)."""
        if self._proc is None:
            raise RuntimeError("GatewayProcess was not started")
        kill(self._proc, sig)

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the daemon to exit; its exit code, or None."""
        if self._proc is None:
            raise RuntimeError("GatewayProcess was not started")
        try:
            self._returncode = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._returncode

    def is_running(self) -> bool:
        """True while the daemon process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def write_config(self, config: str | Mapping[str, Any]) -> None:
        """Rewrite the config file in place (e.g. before a reload signal)."""
        if self._config_path is None:
            raise RuntimeError("GatewayProcess was not started")
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
        tmp = self._config_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self._config_path)

    # ------------------------------------------------------------------ inspection

    def log(self) -> str:
        """The daemon's combined stdout and stderr so far."""
        if self._log_path is None:
            return self._log_cache
        return read_log(self._log_path)

    @property
    def pid(self) -> int:
        """The daemon's process id."""
        if self._proc is None:
            raise RuntimeError("GatewayProcess was not started")
        return self._proc.pid

    def rss_kib(self) -> int:
        """The daemon's resident memory in KiB (Linux ``/proc``), for memory checks."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS in /proc status")

    @property
    def port(self) -> int:
        """The port the daemon listens on."""
        if self._port is None:
            raise RuntimeError("GatewayProcess was not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API base, ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    @property
    def config_path(self) -> Path:
        """The config file the daemon was started with."""
        if self._config_path is None:
            raise RuntimeError("GatewayProcess was not started")
        return self._config_path

    @property
    def returncode(self) -> int | None:
        """The exit code once the daemon has exited (and been waited for), else None."""
        if self._proc is not None:
            return self._proc.poll()
        return self._returncode


def run_gateway_expecting_failure(
    config: ConfigLike,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    unset_env: Sequence[str] = (),
    use_cli: bool = False,
) -> tuple[int, str]:
    """Run the daemon on ``config`` and wait for it to exit by itself.

    Returns ``(exit code, combined stdout+stderr)``. If it is still running after ``timeout``
    seconds it is killed by pid and :class:`GatewayDidNotExit` (an AssertionError) is raised
    with its output.
    """
    directory = Path(tempfile.mkdtemp(prefix="gatewayd-test-"))
    try:
        config_path = write_config_file(config, directory)
        log_path = directory / "gateway.log"
        command = command_line(config_path, free_port(), extra_args, use_cli)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=directory,
                env=environment(env, unset_env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill(proc, signal.SIGTERM)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                kill(proc, signal.SIGKILL)
                proc.wait(10.0)
            raise GatewayDidNotExit(
                f"gateway did not exit by itself within {timeout}s", read_log(log_path)
            ) from None
        return code, read_log(log_path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
