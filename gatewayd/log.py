"""Logging through :mod:`twisted.logger`, with debug events only under ``-v``.

twistd's observer prints every level, so gatewayd's loggers publish through one
level filter that ``-v`` opens to debug. ``--log-format json`` (or
``general_settings.log_format: json``) replaces twistd's text observer with
:func:`json_observer`: one JSON object per line and event, for Loki, Elasticsearch
or journald.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import provider

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer: ILogObserver = FilteringLogObserver(globalLogPublisher, [_predicate])

#: Event keys that are Twisted's bookkeeping (or legacy duplicates of the message).
_SKIP = {"message", "format", "isError", "why", "failure", "time", "printed", "system"}


def get_logger(namespace: str) -> Logger:
    """A logger for ``namespace`` whose debug events show only when verbose."""
    return Logger(namespace=namespace, observer=_observer)


def set_verbose(verbose: bool) -> None:
    """``-v``: let debug events through."""
    _predicate.setLogLevelForNamespace("", LogLevel.debug if verbose else LogLevel.info)


def event_as_json(event: dict[str, Any]) -> str:
    """One event as one line of JSON: ``time``, ``level``, ``logger``, ``message``, the
    event's own scalar fields (an access line's ``status``, ``alias``, ``latency_ms``
    ...; names starting with ``_`` are text-only) and, for a failure, ``traceback``. Fields hold what the text line shows,
    nothing more: no secret reaches either."""
    out: dict[str, Any] = {}
    when = event.get("log_time")
    if isinstance(when, int | float):
        out["time"] = (
            datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")
        ).replace("+00:00", "Z")
    level = event.get("log_level")
    out["level"] = getattr(level, "name", None) or "info"  # LogLevel constants have names
    out["logger"] = event.get("log_namespace") or event.get("system") or "-"
    out["message"] = formatEvent(event)
    for key, value in event.items():
        if key.startswith(("log_", "_")) or key in _SKIP or key in out:
            continue
        if value is None or isinstance(value, str | int | float | bool):
            out[key] = value
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        out["traceback"] = failure.getTraceback()
    return json.dumps(out, ensure_ascii=False, default=str)


def json_observer(stream: IO[str] | None = None) -> ILogObserver:
    """An observer writing :func:`event_as_json` lines to ``stream`` (the process's
    real stdout: twistd points ``sys.stdout`` into the log system, which would loop)."""
    out = stream or sys.__stdout__ or sys.stdout

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        try:
            line = event_as_json(event)
        except Exception as e:  # a log line must never take the daemon down
            line = json.dumps({"level": "error", "message": f"unloggable event: {e!r}"})
        out.write(line + "\n")
        out.flush()

    result: ILogObserver = observe
    return result


def twistd_json_observer(twistd_options: Any) -> ILogObserver:
    """A JSON observer writing where twistd would have written its text: ``--logfile``
    (rotated like twistd's), else stdout in the foreground, else ``twistd.log``."""
    from twisted.python.logfile import LogFile

    def opt(name: str) -> Any:
        try:
            return twistd_options[name] if twistd_options is not None else None
        except KeyError:
            return None

    path = opt("logfile")
    if path == "-" or (not path and (twistd_options is None or opt("nodaemon"))):
        return json_observer()
    return json_observer(LogFile.fromFullPath(path or "twistd.log"))
