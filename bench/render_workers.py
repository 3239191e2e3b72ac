"""How long a ``/metrics`` scrape takes with ``--workers N``: the merge of every worker's
shared files (:mod:`gatewayd.observability.metric_merge`) and the render, in one process.

    python bench/render_workers.py [--sizes 100,1000] [--workers 2,4] [--scrapes 200]

For each size (deployments, 4 per alias) and worker count, N "workers" (a
:class:`~gatewayd.observability.metric_share.SharedStore` each, with its own pid, as the daemon's
workers have) write into one temporary directory what a request per deployment each
writes (the 10 updates of ``bench/metrics_hot.py``, plus the in-flight and cooldown
gauges of every deployment, copied as the reactor-lag tick does); worker 0 then scrapes,
as ``GET /metrics`` does (``GatewayMetrics.pieces``: its gauges copied, every file merged,
the text rendered in pieces). Rows:

- *first*: the first scrape of a worker (every key parsed, every series made): once;
- *idle*: nothing changed since the scrape before;
- *one deployment*: another worker answered one request since;
- *every deployment*: every worker answered a request for every deployment since (the
  updates themselves are not timed);

and the same scrapes of one process without workers (``native``) for comparison.
Prints a markdown table: p50 / p99 wall milliseconds, and the p50 of the CPU time the
scrape took (``time.process_time``: less disturbed by other jobs on the machine). Timing
belongs here, never in a test.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

from metrics_hot import wrapped

from gatewayd.daemon.gc_tuning import freeze_startup_heap
from gatewayd.observability.metric_share import SharedStore
from gatewayd.observability.metrics import GatewayMetrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def labels(n: int) -> list[tuple[str, str]]:
    return [(f"alias-{i // 4}", f"dep-{i}") for i in range(n)]


def request(m: GatewayMetrics, alias: str, dep: str) -> None:
    """What a non-streamed request that succeeds at once updates (bench/metrics_hot.py's)."""
    wrapped(m)(alias, dep)


def gauges(m: GatewayMetrics, deps: list[tuple[str, str]]) -> None:
    m.in_flight.collect = lambda: [(d, 0.0) for d in deps]
    m.cooldown.collect = lambda: [(d, 0.0) for d in deps]
    m.upstream_connections.collect = lambda: [(("http://127.0.0.1:9", "idle"), 2.0)]


def scrape(m: GatewayMetrics, accept: str | None) -> int:
    pieces, _ = m.pieces(accept)
    return sum(map(len, pieces))


def timed(
    m: GatewayMetrics, accept: str | None, between: Callable[[], None], scrapes: int
) -> tuple[float, float, float]:
    """p50 and p99 wall ms, and p50 CPU ms (steadier on a shared machine)."""
    wall, cpu = [], []
    for _ in range(scrapes):
        between()
        t0, c0 = time.perf_counter(), time.process_time()
        scrape(m, accept)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    wall.sort()
    p99 = wall[int(len(wall) * 0.99)]
    return 1000 * statistics.median(wall), 1000 * p99, 1000 * statistics.median(cpu)


def bench(
    n: int, workers: int, scrapes: int, accept: str | None
) -> list[tuple[str, float, float, float]]:
    deps = labels(n)
    directory = tempfile.mkdtemp(prefix="gatewayd-render-workers-")
    try:
        if workers:
            ms = [
                GatewayMetrics(store=SharedStore(directory, pid=10_000 + i)) for i in range(workers)
            ]
        else:
            ms = [GatewayMetrics()]
        for m in ms:
            gauges(m, deps)
            for alias, dep in deps:
                request(m, alias, dep)
            m.refresh()
        me, other = ms[0], ms[-1]
        rows = []
        t0, c0 = time.perf_counter(), time.process_time()
        size = scrape(me, accept)
        cpu = time.process_time() - c0
        rows.append(("first", 1000 * (time.perf_counter() - t0), float(size), 1000 * cpu))
        freeze_startup_heap()  # as the daemon does once running
        rows.append(("idle", *timed(me, accept, lambda: None, scrapes)))
        i = iter(range(10**9))

        def one() -> None:
            alias, dep = deps[next(i) % n]
            request(other, alias, dep)

        rows.append(("one deployment", *timed(me, accept, one, scrapes)))

        def every() -> None:
            for m in ms:
                for alias, dep in deps:
                    request(m, alias, dep)

        rows.append(("every deployment", *timed(me, accept, every, max(5, scrapes // 20))))
        return rows
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100,1000", help="deployment counts")
    ap.add_argument("--workers", default="2,4", help="worker counts (0: one process, native)")
    ap.add_argument("--scrapes", type=int, default=200, help="timed scrapes per row")
    ap.add_argument("--openmetrics", action="store_true", help="Accept: OpenMetrics")
    args = ap.parse_args()
    accept = OPENMETRICS if args.openmetrics else None
    print("| deployments | workers | scrape | p50 ms | p99 ms | p50 CPU ms |")
    print("|--:|--:|---|--:|--:|--:|")
    for n in (int(s) for s in args.sizes.split(",")):
        for w in (0, *(int(s) for s in args.workers.split(","))):
            who = str(w) if w else "1 (native)"
            for what, p50, p99, cpu in bench(n, w, args.scrapes, accept):
                if what == "first":
                    print(
                        f"| {n} | {who} | first (once; {int(p99)} bytes) | {p50:.2f} | | {cpu:.2f} |"
                    )
                else:
                    print(
                        f"| {n} | {who} | {what} | {p50:.2f} | {p99:.2f} | {cpu:.2f} |", flush=True
                    )


if __name__ == "__main__":
    main()
