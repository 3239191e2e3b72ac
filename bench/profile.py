"""Where a gateway process spends its CPU under load: py-spy samples one gatewayd (one
worker, pinned) while ``wrk`` saturates it through the bench's nginx upstream; prints the
top functions by own and by cumulative time, as percentages of the samples.

    pip install py-spy
    python bench/profile.py [--duration 15] [--top 25] [--keep DIR]

``--keep DIR`` keeps py-spy's raw (collapsed-stack) files there, e.g. for a flame graph
(``flamegraph.pl`` or speedscope). Same setup as ``bench/compare.py``: everything on
127.0.0.1, every process stopped by pid.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from compare import start_gatewayd, start_upstream
from harness import Proc, wrk

#: The event loop's own frames: everything under them is work for requests.
_LOOP = ("EPollReactor.doPoll ", "ReactorBase.runUntilCurrent ")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """``render (twisted/web/server.py)`` from py-spy's ``render (/long/path/x.py:12)``."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m['func']} ({path})"


def aggregate(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """Own and cumulative samples per function, and the total, from collapsed stacks."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";")]
        # The reactor thread only (thread-pool threads wait), below the event loop's frames.
        roots = [i for i, f in enumerate(frames) if f.startswith(_LOOP)]
        if not roots:
            continue
        frames = frames[roots[-1] + 1 :]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            cumulative[f] += n
    return own, cumulative, total


def module(frame: str) -> str:
    """The package a frame's file belongs to: ``twisted/web``, ``email``, ``gatewayd/web``."""
    m = _FRAME.match(frame)
    if not m:
        return frame
    parts = m["file"].split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[0].removesuffix(".py")


def report(title: str, raw: str, top: int) -> str:
    own, cumulative, total = aggregate(raw)
    by_module: Counter[str] = Counter()
    for f, n in own.items():
        by_module[module(f)] += n
    lines = [f"### {title} ({total} samples)", "", "| own % | package |", "|--:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{m}` |" for m, n in by_module.most_common(12)]
    lines += ["", "| own % | function |", "|--:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{f}` |" for f, n in own.most_common(top)]
    lines += ["", "| cumulative % | function |", "|--:|---|"]
    lines += [f"| {100 * n / total:.1f} | `{f}` |" for f, n in cumulative.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=15.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--target-cpus", default=str(cores - 1))
    ap.add_argument("--load-cpus", default="0")
    ap.add_argument("--keep", type=Path, help="keep py-spy's raw output here")
    args = ap.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        sys.exit("needs py-spy: pip install py-spy")

    tmp = Path(tempfile.mkdtemp(prefix="gatewayd-profile-"))
    procs: list[Proc] = []
    out: list[str] = []
    try:
        upstream, _, files, cfg = start_upstream(tmp, args.load_cpus)
        procs.append(upstream)
        gw, port = start_gatewayd(tmp, cfg, 1, args.target_cpus)
        procs.append(gw)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for mode in ("json", "stream"):
            wrk(url, files[mode], args.connections, 2, args.load_cpus, gw)  # warm up
            raw = tmp / f"{mode}.txt"
            spy = [pyspy, "record", "-p", str(gw.pid), "-d", f"{args.duration:g}", "-r"]
            spy += [str(args.rate), "-F", "-f", "raw", "-o", str(raw)]
            load = threading.Thread(
                target=wrk,
                args=(url, files[mode], args.connections, args.duration + 2, args.load_cpus, gw),
            )
            load.start()
            subprocess.run(spy, capture_output=True, timeout=args.duration + 60, check=True)
            load.join(args.duration + 60)
            out.append(
                report(f"{mode} ({args.connections} connections)", raw.read_text(), args.top)
            )
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(raw, args.keep / raw.name)
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
