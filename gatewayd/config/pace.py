"""Pacing: a CPU-bound build in a thread beside the event loop, in short runs and pauses.

A reload parses and builds in a thread, but under the same GIL as the event loop. While
that thread is runnable, every socket call of the loop (each one gives the GIL up) can
hand it the GIL for a whole switch interval: at saturation the loop served a third of
its requests during a reload. Paced, the thread works for ``run`` seconds, then sleeps
for ``pause`` (not runnable: the loop has the GIL to itself). :func:`pace` is called
often (each YAML scalar and node, each deployment); it does nothing outside
:func:`pacing`, so a load at start or by the workers' supervisor is not slowed.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


class _Pacer:
    __slots__ = ("pause", "run", "since")

    def __init__(self, run: float, pause: float) -> None:
        self.run, self.pause = run, pause
        self.since = time.perf_counter()

    def __call__(self) -> None:
        if time.perf_counter() - self.since >= self.run:
            time.sleep(self.pause)
            self.since = time.perf_counter()


def pace() -> None:
    """Sleep if this thread has worked for its run (inside :func:`pacing` only)."""
    pacer = getattr(_local, "pacer", None)
    if pacer is not None:
        pacer()


@contextmanager
def pacing(run: float, pause: float) -> Iterator[None]:
    """Pace :func:`pace` calls in this thread for the duration."""
    before = getattr(_local, "pacer", None)
    _local.pacer = _Pacer(run, pause)
    try:
        yield
    finally:
        _local.pacer = before


#: The GIL switch interval while a reload builds in its thread (CPython's is 5 ms). The
#: event loop gives the GIL up at every socket call; with a CPU-bound thread beside it,
#: each time it waits up to a whole interval to get it back.
BUILD_SWITCH_INTERVAL = 0.0005


#: The build thread's runs and pauses (gatewayd.config.pace): at most a fifth of the
#: time; the event loop has the GIL alone the rest.
BUILD_RUN, BUILD_PAUSE = 0.0005, 0.002

#: Allocations between young collections while a reload builds (gatewayd.daemon.gc_tuning sets
#: 10,000 otherwise): more collections, each of fewer objects.
BUILD_YOUNG_THRESHOLD = 1000


@contextmanager
def reactor_first() -> Iterator[None]:
    """In the build thread: paced, with a short switch interval and short young
    collections; all put back after (each unless someone changed it meanwhile).

    The build's objects (YAML nodes, raw mappings, the new config) live until it ends:
    each young collection during it found up to 10,000 survivors to walk and move, 3-6 ms
    each (20-40 ms on a busy core) with the GIL held, so pacing could not help. Turning
    the collector off for the build instead made its first collection after (of every
    request's cycles meanwhile) 150-230 ms."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, BUILD_SWITCH_INTERVAL))
    mine = sys.getswitchinterval()
    thresholds = gc.get_threshold()
    young = (min(thresholds[0], BUILD_YOUNG_THRESHOLD), *thresholds[1:])
    gc.set_threshold(*young)
    try:
        with pacing(BUILD_RUN, BUILD_PAUSE):
            yield
    finally:
        if gc.get_threshold() == young:
            gc.set_threshold(*thresholds)
        if sys.getswitchinterval() == mine:
            sys.setswitchinterval(interval)
