"""How the daemon under test is launched and watched: its command line, environment and
config file, free ports, probes, and the errors :class:`~gatewayd.testing.GatewayProcess`
raises."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeAlias

import yaml

#: A config given as YAML text, as a mapping (dumped with ``yaml.safe_dump``) or as the path of
#: an existing file (used in place).
ConfigLike: TypeAlias = "str | Mapping[str, Any] | os.PathLike[str]"

HOST: Final = "127.0.0.1"
#: The directory that contains the ``gatewayd`` package (the source tree root when not
#: installed); it also holds ``twisted/plugins`` in a checkout.
POLL: Final = 0.05


class GatewayStartupError(RuntimeError):
    """The daemon exited, or did not become ready in time; ``log`` holds its output."""

    def __init__(self, message: str, log: str, returncode: int | None) -> None:
        super().__init__(f"{message}\n--- gateway output ---\n{log}")
        self.log = log
        self.returncode = returncode


class GatewayDidNotExit(AssertionError):
    """The daemon was expected to exit by itself but was still running; it has been killed."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(f"{message}\n--- gateway output ---\n{log}")
        self.log = log


def free_port() -> int:
    """Return a currently free 127.0.0.1 TCP port (bound, read and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def write_config_file(config: ConfigLike, directory: Path) -> Path:
    """Write the config into ``directory`` (or return the given file path) and return its path."""
    if isinstance(config, os.PathLike):
        return Path(config).resolve()
    path = directory / "gateway.yaml"
    if isinstance(config, str):
        text = config
    else:
        text = yaml.safe_dump(dict(config), sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def _bin_dir() -> Path:
    # Not resolved: a venv's bin/python is a symlink and the scripts sit next to the link.
    return Path(sys.executable).parent


def command_line(
    config_path: Path, port: int, extra_args: Sequence[str], use_cli: bool
) -> list[str]:
    """Build the daemon command line (falling back to ``python -c`` if a script is missing)."""
    flags = ["-c", str(config_path), "--host", HOST, "-p", str(port), *extra_args]
    if use_cli:
        script = _bin_dir() / "gatewayd"
        if script.exists():
            return [str(script), *flags]
        code = (
            "import sys; from gatewayd.cli import main; sys.argv[0] = 'gatewayd'; sys.exit(main())"
        )
        return [sys.executable, "-c", code, *flags]
    twistd = _bin_dir() / "twistd"
    prefix = (
        [str(twistd)]
        if twistd.exists()
        else [
            sys.executable,
            "-c",
            "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()",
        ]
    )
    return [*prefix, "-n", "gateway", *flags]


def environment(env: Mapping[str, str] | None, unset_env: Sequence[str]) -> dict[str, str]:
    """``os.environ`` + ``PYTHONUNBUFFERED=1`` + overrides - unset.

    The daemon runs from the *installed* package, as users run it: twistd must find the
    plugin in site-packages, so the source tree is deliberately not put on ``PYTHONPATH``."""
    result = dict(os.environ)
    result["PYTHONUNBUFFERED"] = "1"
    result.update(env or {})
    for name in unset_env:
        result.pop(name, None)
    return result


def read_log(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def kill(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process by pid, only if it has not been reaped yet."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


def probe(port: int, path: str) -> bool:
    """Return True if ``GET http://127.0.0.1:port{path}`` answers 200 within a second."""
    conn = http.client.HTTPConnection(HOST, port, timeout=1.0)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
