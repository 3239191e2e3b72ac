"""Time to first token with one replica of three turned slow: ``simple-shuffle``,
``latency-based-routing`` and hedging side by side; prints a markdown table.

    python bench/fleet.py [--requests 150] [--concurrency 4] [--slow-ms 400] [--fast-ms 20]

The real daemon (the installed package) in front of three fake OpenAI-compatible
replicas (:class:`gatewayd.testing.FakeUpstream`, on loopback) that stream their answer
after a first-byte delay: two fast, one slow. Each row starts a fresh gateway with one
routing setup and sends ``--requests`` streamed chat completions from ``--concurrency``
client threads, timing each request's first ``data:`` event; it reports p50, p99 and
the mean, the share of requests the slow replica answered, and the hedges sent (from
``/metrics``). A short run on a shared machine: compare the rows, not the absolute
numbers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

from gatewayd.testing import FakeUpstream, GatewayProcess, Stream

SETUPS: list[tuple[str, dict[str, Any]]] = [
    ("simple-shuffle", {"routing_strategy": "simple-shuffle"}),
    ("latency-based-routing", {"routing_strategy": "latency-based-routing"}),
    (
        "simple-shuffle + hedge 100 ms, budget 10 %",
        {"hedge": {"after_ms": 100, "budget_percent": 10}},
    ),
    (
        "simple-shuffle + hedge 100 ms, budget 50 %",
        {"hedge": {"after_ms": 100, "budget_percent": 50}},
    ),
    (
        "latency-based-routing + hedge 100 ms, budget 10 %",
        {"routing_strategy": "latency-based-routing", "hedge": {"after_ms": 100}},
    ),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


BODY = json.dumps(
    {"model": "fleet", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
).encode()


def first_token(conn: http.client.HTTPConnection) -> tuple[float, str]:
    """Seconds to the first ``data:`` event, and the deployment that answered."""
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", BODY, {"content-type": "application/json"})
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read()[:200]!r}")
    took = None
    while line := r.readline():
        if took is None and line.startswith(b"data:"):
            took = time.perf_counter() - start
    assert took is not None, "no event"
    return took, r.headers.get("x-gatewayd-deployment", "?")


def hedges_sent(url: str) -> int:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith('gatewayd_hedges_sent_total{alias="fleet"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def run(
    general: dict[str, Any], replicas: list[FakeUpstream], requests: int, concurrency: int
) -> dict[str, Any]:
    config = {
        "model_list": [
            {
                "model_name": "fleet",
                "params": {"model": "openai/m", "api_base": r.url, "api_key": "bench"},
                "model_info": {"id": f"replica-{i}"},
            }
            for i, r in enumerate(replicas)
        ],
        "general_settings": {"access_log": False, **general},
    }
    times: list[float] = []
    served: Counter[str] = Counter()
    lock = threading.Lock()
    left = [requests]

    with GatewayProcess(config) as gw:

        def worker() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
            try:
                while True:
                    with lock:
                        if left[0] <= 0:
                            return
                        left[0] -= 1
                    took, dep = first_token(conn)
                    with lock:
                        times.append(took)
                        served[dep] += 1
            finally:
                conn.close()

        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        hedges = hedges_sent(gw.url)
    return {
        "p50": percentile(times, 0.5),
        "p99": percentile(times, 0.99),
        "mean": statistics.fmean(times),
        "slow_share": served["replica-2"] / max(1, len(times)),
        "hedges": hedges,
        "n": len(times),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=150)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--slow-ms", type=float, default=400.0)
    ap.add_argument("--fast-ms", type=float, default=20.0)
    args = ap.parse_args(argv)
    fast = Stream(events=3, first_byte_delay=args.fast_ms / 1000)
    slow = Stream(events=3, first_byte_delay=args.slow_ms / 1000)
    print(
        f"3 replicas (2 at {args.fast_ms:g} ms, 1 at {args.slow_ms:g} ms to first byte), "
        f"{args.requests} streamed requests, {args.concurrency} at a time\n",
        file=sys.stderr,
    )
    rows = []
    with (
        FakeUpstream(default=fast) as a,
        FakeUpstream(default=fast) as b,
        FakeUpstream(default=slow) as c,
    ):
        for name, general in SETUPS:
            r = run(general, [a, b, c], args.requests, args.concurrency)
            rows.append((name, r))
            print(f"  {name}: done", file=sys.stderr)
    print("| setup | TTFT p50 ms | TTFT p99 ms | mean ms | slow replica's share | hedges sent |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['p50'] * 1000:.0f} | {r['p99'] * 1000:.0f} | {r['mean'] * 1000:.0f} "
            f"| {r['slow_share'] * 100:.0f} % | {r['hedges']} |"
        )


if __name__ == "__main__":
    main()
