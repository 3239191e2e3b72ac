"""Logging through :mod:`twisted.logger`, with debug events only under ``-v``.

twistd's observer prints every level, so gatewayd's loggers publish through one
level filter that ``-v`` opens to debug.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer: ILogObserver = FilteringLogObserver(globalLogPublisher, [_predicate])


def get_logger(namespace: str) -> Logger:
    """A logger for ``namespace`` whose debug events show only when verbose."""
    return Logger(namespace=namespace, observer=_observer)


def set_verbose(verbose: bool) -> None:
    """``-v``: let debug events through."""
    _predicate.setLogLevelForNamespace("", LogLevel.debug if verbose else LogLevel.info)
