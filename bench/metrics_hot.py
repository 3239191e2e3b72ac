"""What one request's metric updates cost: nanoseconds per request-worth of updates.

    python bench/metrics_hot.py [--requests 200000] [--deployments 1000]

A non-streamed request that succeeds on its first attempt updates, through
:class:`gatewayd.observability.metrics.GatewayMetrics`: the attempt counter and the upstream latency
histogram (router), the request counter, the per-key request counter and the overhead
histogram (access log), the token counters from ``usage`` (two), the per-key token counters
(two) and the spend counter (the limits stage). Rows:

- ``native``: the default in one process (:mod:`gatewayd.observability.metric_store`);
- ``shared``: with ``--workers N`` (:mod:`gatewayd.observability.metric_share`: the values in this
  process's mmap'd file, an update is ``view[slot] += x``);
- ``prometheus_client, cached children``: the same wrapper over prometheus_client's metrics
  (each label set's child found in a dict; what main did before);
- ``prometheus_client multiprocess, cached children``: the same in a child process with
  ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported (its values in its
  mmap'd files: what ``--workers N`` did before);
- ``prometheus_client, .labels() per call``: the plain prometheus_client idiom.

No reactor; label sets cycle over ``--deployments`` deployments.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from gatewayd.observability.metric_share import SharedStore
from gatewayd.observability.metrics import GatewayMetrics


def wrapped(m: GatewayMetrics) -> Callable[[str, str], None]:
    def request(alias: str, dep: str) -> None:
        m.attempts.inc(alias, dep, "ok")
        m.upstream_latency.observe(0.0123, alias, dep)
        m.count_usage(alias, dep, 9, 8)
        m.key_tokens.inc("team", alias, "prompt", amount=9)
        m.key_tokens.inc("team", alias, "completion", amount=8)
        m.spend.inc("team", alias, dep, amount=0.00002)
        m.requests.inc(alias, dep, "200", "chat")
        m.key_requests.inc("team", alias, "200")
        m.overhead.observe(0.0004)

    return request


def plain() -> Callable[[str, str], None]:
    r = CollectorRegistry()
    attempts = Counter("a_total", "h", ("alias", "deployment", "outcome"), registry=r)
    latency = Histogram("l_seconds", "h", ("alias", "deployment"), registry=r)
    tokens = Counter("t_total", "h", ("alias", "deployment", "kind"), registry=r)
    key_tokens = Counter("kt_total", "h", ("key", "alias", "kind"), registry=r)
    spend = Counter("s_total", "h", ("key", "alias", "deployment"), registry=r)
    requests = Counter("r_total", "h", ("alias", "deployment", "status", "dialect"), registry=r)
    key_requests = Counter("kr_total", "h", ("key", "alias", "status"), registry=r)
    overhead = Histogram("o_seconds", "h", registry=r)

    def request(alias: str, dep: str) -> None:
        attempts.labels(alias, dep, "ok").inc()
        latency.labels(alias, dep).observe(0.0123)
        tokens.labels(alias, dep, "prompt").inc(9)
        tokens.labels(alias, dep, "completion").inc(8)
        key_tokens.labels("team", alias, "prompt").inc(9)
        key_tokens.labels("team", alias, "completion").inc(8)
        spend.labels("team", alias, dep).inc(0.00002)
        requests.labels(alias, dep, "200", "chat").inc()
        key_requests.labels("team", alias, "200").inc()
        overhead.observe(0.0004)

    return request


def ns_per_request(request: Callable[[str, str], None], n: int, deployments: int) -> float:
    labels = [(f"alias-{i // 4}", f"dep-{i}") for i in range(deployments)]
    for alias, dep in labels:  # every label set exists: the steady state
        request(alias, dep)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for i in range(n):
            alias, dep = labels[i % deployments]
            request(alias, dep)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def client_multiprocess(requests: int, deployments: int) -> float:
    """The cached-children row in a child process in prometheus_client's multiprocess
    mode (it picks its storage at import: the variable must be set before)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[3]); import metrics_hot as h; "
        "import gatewayd.observability.metrics as gm; gm.multiprocess_dir = lambda: None; "
        "print(h.ns_per_request(h.wrapped(gm.GatewayMetrics(native=False)), "
        "int(sys.argv[1]), int(sys.argv[2])))"
    )
    with tempfile.TemporaryDirectory() as d:
        # Seen by prometheus_client only: GatewayMetrics is told there is no shared dir.
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": d}
        out = subprocess.run(
            [sys.executable, "-c", code, str(requests), str(deployments), HERE],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return float(out.stdout)


HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--deployments", type=int, default=1000)
    args = ap.parse_args()
    n, deps = args.requests, args.deployments
    with tempfile.TemporaryDirectory() as d:
        rows = [
            ("native (one process, the default)", wrapped(GatewayMetrics())),
            ("shared (--workers N)", wrapped(GatewayMetrics(store=SharedStore(d)))),
            ("prometheus_client, cached children", wrapped(GatewayMetrics(native=False))),
            ("prometheus_client, .labels() per call", plain()),
        ]
        print("| storage | ns per request (10 updates) |")
        print("|---|--:|")
        for name, request in rows:
            print(f"| {name} | {ns_per_request(request, n, deps):.0f} |", flush=True)
    name = "prometheus_client multiprocess, cached children (--workers before)"
    print(f"| {name} | {client_multiprocess(n, deps):.0f} |")
    print(f"\nbest of 3 x {args.requests} requests over {args.deployments} deployments' labels")


if __name__ == "__main__":
    main()
