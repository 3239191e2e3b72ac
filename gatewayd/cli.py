"""Command line: ``twistd -n gateway ...`` and the ``gatewayd`` console script.

Both take the documented flags: ``-c/--config`` (required), ``--host`` (0.0.0.0),
``-p/--port`` (4000), ``-v/--verbose``, and ``--listen ENDPOINT`` (a Twisted
endpoint string: ``tcp:...``, ``unix:...``, ``systemd:...``) replacing host/port.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from gatewayd import __version__


class Options(usage.Options):
    longdesc = "Run gatewayd, an OpenAI-compatible LLM gateway, on a YAML config."

    optParameters: list[Any] = [
        ["config", "c", None, "Path to the YAML configuration file (required)."],
        ["host", None, "0.0.0.0", "Host address to bind to."],
        [
            "listen",
            None,
            None,
            "Twisted endpoint to listen on (tcp:..., unix:..., systemd:...); replaces host/port.",
        ],
        [
            "log-format",
            None,
            None,
            "Log as text (the default) or json (one object per line); "
            "overrides general_settings.log_format.",
        ],
    ]
    optFlags: list[Any] = [
        ["verbose", "v", "Enable verbose (debug) logging."],
        [
            "check-config",
            None,
            "Validate the config as a start would, describe it and exit "
            "(0: valid, 1: warnings with --strict, 2: errors).",
        ],
        ["strict", None, "With --check-config: warnings fail the check (exit 1)."],
        ["json", None, "With --check-config: the report as one JSON document."],
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"gatewayd {__version__}")
        sys.exit(0)

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self["port"] = 4000
        self["backlog"] = None
        self["workers"] = None

    def getSynopsis(self) -> str:
        if self.parent is None:  # the gatewayd script; under twistd, twistd's own line
            return "Usage: gatewayd -c FILE [options]"
        return super().getSynopsis()

    def _program(self) -> str:
        return "gatewayd" if self.parent is None else "twistd gateway"

    def parseOptions(self, options: list[str] | None = None) -> None:
        """A bad flag is one line and a pointer to ``--help`` (exit 2), not the whole help."""
        try:
            super().parseOptions(options)  # type: ignore[no-untyped-call]
        except usage.UsageError as e:
            prog = self._program()
            print(f"{prog}: {e}\nTry '{prog} --help' for the options.", file=sys.stderr)
            raise SystemExit(2) from None

    def opt_port(self, value: str) -> None:
        """Port to listen on. [default: 4000]"""
        self["port"] = _int_flag("--port", value, 0, 65535)

    opt_p = opt_port

    def opt_backlog(self, value: str) -> None:
        """listen(2) backlog; overrides general_settings.listen_backlog (default 1024)."""
        self["backlog"] = _int_flag("--backlog", value, 1, 2**31 - 1)

    def opt_workers(self, value: str) -> None:
        """Worker processes on one socket; overrides general_settings.workers (default 1)."""
        self["workers"] = _int_flag("--workers", value, 1, 1024)

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config/-c is required: the YAML configuration file")
        if self["log-format"] not in (None, "text", "json"):
            raise usage.UsageError(f"--log-format must be text or json, got {self['log-format']}")


def _int_flag(name: str, value: str, low: int, high: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise usage.UsageError(f"{name} must be an integer, got {value!r}") from None
    if not low <= n <= high:
        raise usage.UsageError(f"{name} must be {low}-{high}, got {n}")
    return n


def make_service(options: Options) -> IService:
    """Validate the config and build the service; a bad config exits non-zero, one line."""
    from gatewayd.config import ConfigError
    from gatewayd.daemon import worker, workers
    from gatewayd.observability.log import set_verbose
    from gatewayd.service import GatewayService, listen_description, with_backlog

    if options["check-config"]:
        strict, as_json = bool(options["strict"]), bool(options["json"])
        raise SystemExit(check_config_main(options["config"], strict, as_json))
    set_verbose(bool(options["verbose"]))
    _no_default_pidfile_in_foreground(options)
    listen = options["listen"] or listen_description(options["host"], options["port"])
    try:
        service = GatewayService.from_file(options["config"], listen, exit_on_listen_failure=True)
    except ConfigError as e:
        print(f"gatewayd: config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from gatewayd.observability.log import twistd_json_observer, twistd_text_observer

    if (options["log-format"] or service.config.general.log_format) == "json":
        service.log_observer = twistd_json_observer(getattr(options, "parent", None))
    else:  # twistd's text lines, made cheaper (the access log writes one per request)
        service.log_observer = twistd_text_observer(getattr(options, "parent", None))
    from gatewayd.daemon import gc_tuning as gctune

    # What is alive once running (code, config, table) is left out of GC passes: p99.
    service.reactor.callWhenRunning(gctune.freeze_startup_heap)
    service.after_reload.append(gctune.freeze_after_reload)  # the new config and table
    fd = worker.worker_fd()
    if fd is not None:  # a worker of --workers N: serves on the supervisor's socket
        return worker.as_worker(service, fd)
    try:
        # Parsed now, so that a bad endpoint (or no socket passed by systemd) is one line.
        backlog = options["backlog"] or service.config.general.listen_backlog
        endpoint = serverFromString(service.reactor, with_backlog(listen, backlog))
    except Exception as e:
        reason = "no such inherited socket" if isinstance(e, IndexError) else str(e) or repr(e)
        print(f"gatewayd: cannot use listen endpoint {listen!r}: {reason}", file=sys.stderr)
        raise SystemExit(2) from None
    service.listen = endpoint
    count = options["workers"] or service.config.general.workers
    if count > 1:
        try:
            return workers.supervisor_for(
                options["config"],
                endpoint,
                count,
                service.reactor,
                verbose=bool(options["verbose"]),
                grace=service.config.general.graceful_shutdown_timeout,
                listen_description=listen,
            )
        except ConfigError as e:
            print(f"gatewayd: config error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return service


def _no_default_pidfile_in_foreground(options: Options) -> None:
    """``twistd -n`` writes ``twistd.pid`` into the working directory by default, so two
    gateways started from one directory would refuse each other. In the foreground an init
    system tracks the process: write a pidfile only when one was asked for explicitly."""
    parent = getattr(options, "parent", None)
    if parent is None:
        return
    try:
        if parent["nodaemon"] and parent["pidfile"] == os.path.abspath("twistd.pid"):
            parent["pidfile"] = ""
    except KeyError:
        pass


def check_config_main(path: str, strict: bool, as_json: bool = False) -> int:
    """Print the check of ``path`` (a failing one to stderr; ``as_json``: the JSON
    document, always to stdout) and return the exit status."""
    from gatewayd.config import load_config
    from gatewayd.config.check import OK, check_config

    result = check_config(path, load_config, strict)
    if as_json:
        print(result.json, end="")
    else:
        print(result.text, end="", file=sys.stdout if result.status == OK else sys.stderr)
    return result.status


class CheckConfigOptions(usage.Options):
    """``gatewayd check-config FILE [--strict]``."""

    synopsis = "Usage: gatewayd check-config FILE [--strict] [--json]"
    longdesc = (
        "Validate FILE exactly as a start would and print its aliases, deployments (no "
        "secrets), fallbacks, strategies and warnings. Exit 0 when valid, 1 when it has "
        "warnings and --strict is given, 2 on errors."
    )
    optFlags: list[Any] = [
        ["strict", None, "Warnings fail the check (exit 1)."],
        ["json", None, "Print the report as one JSON document (on stdout)."],
    ]

    def parseArgs(self, *args: str) -> None:
        if len(args) != 1:
            raise usage.UsageError("expected one config FILE")
        self["path"] = args[0]


def check_config_command(args: list[str]) -> int:
    """``gatewayd check-config ...``: the exit status (2 for a bad command line too)."""
    opts = CheckConfigOptions()  # type: ignore[no-untyped-call]
    try:
        # Flags may come after FILE (getopt alone stops at the first argument).
        flags = [a for a in args if a.startswith("-")]
        opts.parseOptions(flags + [a for a in args if not a.startswith("-")])  # type: ignore[no-untyped-call]
    except usage.UsageError as e:
        print(f"gatewayd check-config: {e}\n{opts.synopsis}", file=sys.stderr)
        return 2
    return check_config_main(opts["path"], bool(opts["strict"]), bool(opts["json"]))


def main(argv: list[str] | None = None) -> None:
    """``gatewayd -c FILE ...``: runs in the foreground through twistd;
    ``gatewayd check-config FILE``: checks a config and exits."""
    from twisted.scripts.twistd import run

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["check-config"]:
        raise SystemExit(check_config_command(args[1:]))
    Options().parseOptions(args)  # a bad flag exits 2 with one line
    sys.argv = ["gatewayd", "--nodaemon", "--pidfile=", "gateway", *args]
    run()


#: The name twistd's ServiceMaker looks for.
makeService = make_service
