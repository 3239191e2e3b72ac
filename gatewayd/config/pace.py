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
