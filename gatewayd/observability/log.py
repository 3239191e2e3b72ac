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
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import IO, Any, Generic, TypeVar, cast

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import provider

from gatewayd.observability.log_flush import TurnFlushed

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer: ILogObserver = FilteringLogObserver(globalLogPublisher, [_predicate])

#: Event keys that are Twisted's bookkeeping (or legacy duplicates of the message).
_SKIP = {"message", "format", "isError", "why", "failure", "time", "printed", "system"}


_verbose = False
T = TypeVar("T")


class GatewayLogger(Logger):
    """A :class:`Logger` whose ``debug`` costs one flag test when not verbose (an event
    built only to be filtered out costs as much as one that is written)."""

    def debug(self, format: str | None = None, **kwargs: object) -> None:
        if _verbose:
            self.emit(LogLevel.debug, format, **kwargs)


def get_logger(namespace: str) -> Logger:
    """A logger for ``namespace`` whose debug events show only when verbose."""
    return GatewayLogger(namespace=namespace, observer=_observer)


def set_verbose(verbose: bool) -> None:
    """``-v``: let debug events through."""
    global _verbose
    _verbose = verbose
    _predicate.setLogLevelForNamespace("", LogLevel.debug if verbose else LogLevel.info)


def is_verbose() -> bool:
    """Whether debug events are written (``-v``): guards work done only for them."""
    return _verbose


#: The key of an event's message when it is already text (see :func:`emit_text`).
TEXT = "_text"


def emit_text(logger: Logger, level: LogLevel, text: str, fields: dict[str, Any]) -> None:
    """Publish an event whose message is ``text``, already built, with ``fields`` (which
    this takes over) for structured observers. The event's format is ``{_text}``, so any
    observer formats it to ``text``; gatewayd's observers take ``text`` as it is, without
    :mod:`twisted.logger`'s generic formatting (the access log's line per request)."""
    fields[TEXT] = text
    fields["log_logger"] = logger
    fields["log_level"] = level
    fields["log_namespace"] = logger.namespace
    fields["log_source"] = logger.source
    fields["log_format"] = "{_text}"
    fields["log_time"] = time.time()
    logger.observer(fields)


class PerSecond(Generic[T]):
    """``make(second)``, made once per second of ``when`` (a clock's ``time.time()``):
    for text that changes once a second and costs more than the rest of its line."""

    def __init__(self, make: Callable[[int], T]) -> None:
        self._make = make
        self._second: int | None = None
        self._value: T | None = None

    def __call__(self, when: float) -> T:
        second = int(when)
        if second != self._second or self._value is None:
            self._value = self._make(second)
            self._second = second
        return self._value


class _SecondStamp:
    """twistd's timestamp (``2026-12-02T02:06:33+0000``, local time) made once a second:
    with a time zone, it costs more than the rest of an access line."""

    def __init__(self) -> None:
        self._stamp = PerSecond(lambda second: formatTime(float(second)))

    def __call__(self, when: float | None) -> str:
        return "-" if when is None else self._stamp(when)


def _text_formatter() -> Any:
    stamp = _SecondStamp()

    def format_event(event: dict[str, Any]) -> str | None:
        text = event.get(TEXT)
        if not isinstance(text, str) or "log_failure" in event or not text:
            return formatEventAsClassicLogText(event, formatTime=stamp)
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
        line = f"{stamp(event.get('log_time'))} [{system}] {text}"
        if "\n" in line:
            line = line.replace("\n", "\n\t")
        return line + "\n"

    return format_event


def text_observer(stream: IO[Any] | TurnFlushed) -> ILogObserver:
    """twistd's text observer (the same lines), cheaper: the timestamp is made once a
    second and :func:`emit_text` events are written as they are."""
    observer: ILogObserver = FileLogObserver(cast(IO[Any], stream), _text_formatter())
    return observer


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
    text = event.get(TEXT)
    out["message"] = text if isinstance(text, str) else formatEvent(event)
    for key, value in event.items():
        if key.startswith(("log_", "_")) or key in _SKIP or key in out:
            continue
        if value is None or isinstance(value, str | int | float | bool):
            out[key] = value
    failure = event.get("log_failure")
    if isinstance(failure, Failure):
        out["traceback"] = failure.getTraceback()
    return json.dumps(out, ensure_ascii=False, default=str)


def json_observer(stream: IO[str] | TurnFlushed | None = None) -> ILogObserver:
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


def _twistd_option(twistd_options: Any, name: str) -> Any:
    try:
        return twistd_options[name] if twistd_options is not None else None
    except KeyError:
        return None


def twistd_json_observer(twistd_options: Any) -> ILogObserver:
    """A JSON observer writing where twistd would have written its text: ``--logfile``
    (rotated like twistd's), else stdout in the foreground, else ``twistd.log``; flushed
    once per reactor turn (:class:`~gatewayd.observability.log_flush.TurnFlushed`)."""
    from twisted.python.logfile import LogFile

    def opt(name: str) -> Any:
        return _twistd_option(twistd_options, name)

    path = opt("logfile")
    if path == "-" or (not path and (twistd_options is None or opt("nodaemon"))):
        return json_observer(TurnFlushed(sys.__stdout__ or sys.stdout))
    return json_observer(TurnFlushed(LogFile.fromFullPath(path or "twistd.log")))


def twistd_text_observer(twistd_options: Any) -> ILogObserver | None:
    """:func:`text_observer` where twistd would have put its own text observer (the same
    choice of file, ``SIGUSR1`` rotating a log file), flushed once per reactor turn
    (:class:`~gatewayd.observability.log_flush.TurnFlushed`); None where twistd must choose itself
    (``--syslog``, a daemon told to log to stdout, which twistd refuses)."""
    import signal

    from twisted.python.logfile import LogFile

    def opt(name: str) -> Any:
        return _twistd_option(twistd_options, name)

    if twistd_options is None or opt("syslog"):
        return None
    path, foreground = opt("logfile"), opt("nodaemon")
    if path == "-" or (foreground and not path):
        return None if not foreground else text_observer(TurnFlushed(sys.stdout))
    log_file = LogFile.fromFullPath(path or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):  # as twistd: SIGUSR1 rotates the file

        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return text_observer(TurnFlushed(log_file))
