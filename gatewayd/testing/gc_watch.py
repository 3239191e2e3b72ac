"""Watching the cyclic garbage collector inside a daemon under test (issue 18).

:class:`GCWatch` makes a directory holding a ``sitecustomize.py``; put its :meth:`env`
into the daemon's environment (``GatewayProcess(env=...)``, or a benchmark's) and every
Python process of the daemon (the supervisor and each worker: they inherit the
environment) loads it at start, before gatewayd. It then

- times every collection with ``gc.callbacks`` (count and longest pause per generation,
  total time), and
- on ``SIGUSR2`` writes ``gc-PID.json`` into the report directory: those figures since
  the report before (the first: since start) and,
  with ``collect=True``, what one ``gc.collect()`` finds at that moment (the count of
  objects it freed, by type: objects left in reference cycles).

``disable=True`` also turns the collector off at start (``gc.disable()``), so that
whatever the requests leave in cycles is still there for the count. gatewayd's own
tuning (:mod:`gatewayd.daemon.gc_tuning`) collects and freezes the start-up heap but never
enables a disabled collector. Nothing of gatewayd changes: the hook is Python's own
``sitecustomize`` (the daemon still runs from the installed package).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["SITECUSTOMIZE", "GCWatch"]

#: Loaded by every Python process whose PYTHONPATH starts with the watch's directory.
SITECUSTOMIZE = r'''
"""gatewayd.testing.gc_watch: collections timed; SIGUSR2 writes a report."""
import gc, json, os, signal, time

_DIR = os.environ.get("GATEWAYD_GC_WATCH")
if _DIR:
    if os.environ.get("GATEWAYD_GC_WATCH_DISABLE") == "1":
        gc.disable()
    _stats = {"collections": [0, 0, 0], "longest_ms": [0.0, 0.0, 0.0], "total_ms": 0.0}
    _began = [0.0]
    _ours = [False]

    def _timed(phase, info):
        if _ours[0]:
            return
        if phase == "start":
            _began[0] = time.perf_counter()
            return
        took = (time.perf_counter() - _began[0]) * 1000.0
        gen = info.get("generation", 2)
        _stats["collections"][gen] += 1
        _stats["total_ms"] += took
        if took > _stats["longest_ms"][gen]:
            _stats["longest_ms"][gen] = took

    gc.callbacks.append(_timed)

    def _report(signum, frame):
        out = dict(_stats, pid=os.getpid(), enabled=gc.isenabled())
        out["threshold"] = list(gc.get_threshold())
        out["frozen"] = gc.get_freeze_count()
        # Objects the collector tracks (not frozen), less the timers cancelled but not yet
        # dropped: Twisted's reactor leaves up to 50 in its heap until it compacts it, each
        # with two bound methods, so their count comes and goes whatever the requests do.
        tracked = gc.get_objects()
        cancelled = sum(
            1 for o in tracked if type(o).__name__ == "DelayedCall" and o.cancelled
        )
        out["cancelled_timers"] = cancelled
        out["tracked"] = len(tracked) - 3 * cancelled
        del tracked
        if os.environ.get("GATEWAYD_GC_WATCH_COLLECT") == "1":
            _ours[0] = True
            gc.set_debug(gc.DEBUG_SAVEALL)
            try:
                found = gc.collect()
                kinds = {}
                for obj in gc.garbage:
                    name = type(obj).__qualname__
                    kinds[name] = kinds.get(name, 0) + 1
            finally:
                gc.garbage.clear()
                gc.set_debug(0)
                _ours[0] = False
            out["found"] = found
            out["found_by_type"] = dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:20])
            if os.environ.get("GATEWAYD_GC_WATCH_PATHS") == "1":
                out["cycles"] = _paths()
        # Each report covers the time since the one before (the first: since start).
        _stats.update(collections=[0, 0, 0], longest_ms=[0.0, 0.0, 0.0], total_ms=0.0)
        path = os.path.join(_DIR, "gc-%d.json" % os.getpid())
        text = json.dumps(out)  # (json.dump's pure-Python encoder makes cycles itself)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)

    def _name(o):
        kind = type(o).__qualname__
        if kind in ("method", "function", "frame"):
            code = getattr(getattr(o, "__func__", o), "__code__", None) or getattr(o, "f_code", None)
            return kind + " " + (code.co_qualname if code else "?")
        if kind == "dict":
            return "dict(" + ",".join(map(str, list(o)[:4])) + ")"
        return kind

    def _paths():
        # One cycle per kind of object found (shortest, through found objects only).
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found = list(gc.garbage)
        finally:
            gc.garbage.clear()
            gc.set_debug(0)
        ids = {id(o) for o in found}
        seen, paths = set(), []
        for start in found:
            name = _name(start)
            if name in seen or name.startswith(("dict", "list", "tuple", "cell")):
                continue
            seen.add(name)
            prev, queue = {id(start): None}, [start]
            for o in queue:
                hit = None
                for r in gc.get_referents(o):
                    if r is start:
                        hit = o
                        break
                    if id(r) in ids and id(r) not in prev:
                        prev[id(r)] = o
                        queue.append(r)
                if hit is not None:
                    chain, cur = [], hit
                    while cur is not None:
                        chain.append(_name(cur))
                        cur = prev[id(cur)]
                    paths.append(" -> ".join(reversed(chain)) + " -> " + name)
                    break
        del found
        return paths[:40]

    signal.signal(signal.SIGUSR2, _report)
'''


class GCWatch:
    """A ``sitecustomize`` directory and a report directory; :meth:`close` removes both.

    ``disable``: the daemon starts with the collector off; ``collect``: a report also
    counts what ``gc.collect()`` finds then."""

    def __init__(self, *, disable: bool = False, collect: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gatewayd-gcwatch-"))
        (self.dir / "site").mkdir()
        (self.dir / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.reports = self.dir / "reports"
        self.reports.mkdir()
        self.disable = disable
        self.collect = collect

    def env(self) -> dict[str, str]:
        """The variables that load the watch into a daemon started with them."""
        path = str(self.dir / "site")
        rest = os.environ.get("PYTHONPATH")
        return {
            "PYTHONPATH": path if not rest else f"{path}{os.pathsep}{rest}",
            "GATEWAYD_GC_WATCH": str(self.reports),
            "GATEWAYD_GC_WATCH_DISABLE": "1" if self.disable else "0",
            "GATEWAYD_GC_WATCH_COLLECT": "1" if self.collect else "0",
        }

    def report(self, pid: int, timeout: float = 10.0) -> dict[str, Any]:
        """Ask process ``pid`` for its report (SIGUSR2) and wait for it, at most
        ``timeout`` seconds: the collections' counts and pauses (and what a collection
        finds, with ``collect``)."""
        path = self.reports / f"gc-{pid}.json"
        path.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no GC report from pid {pid} within {timeout:g} s")
            time.sleep(0.02)
        found: dict[str, Any] = json.loads(path.read_text())
        return found

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> GCWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
