"""How much latency and throughput the gateway costs: the same requests sent straight
to a fake upstream and through the real daemon, printed as a table.

    python bench/overhead.py [--requests 2000] [--concurrency 16]

Everything runs on 127.0.0.1. The load generator and the fake upstream share this
process (threads), so absolute numbers are modest; the difference between the rows
is the gateway's cost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from gatewayd.testing import FakeUpstream, GatewayProcess

BODY = json.dumps(
    {"model": "MODEL", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
)


def run(
    host: str,
    port: int,
    path: str,
    model: str,
    requests: int,
    concurrency: int,
    stream: bool = False,
) -> tuple[list[float], list[float], float]:
    """Latencies (s), times to first byte (s) and the wall time for ``requests``."""
    body = BODY.replace("MODEL", model)
    if stream:
        body = body[:-1] + ', "stream": true}'
    payload = body.encode()
    latencies: list[float] = []
    ttfbs: list[float] = []
    lock = threading.Lock()
    per_thread = requests // concurrency

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=30)
        mine: list[tuple[float, float]] = []
        for _ in range(per_thread):
            t0 = time.perf_counter()
            conn.request("POST", path, payload, {"content-type": "application/json"})
            resp = conn.getresponse()
            first = resp.read(1)
            t1 = time.perf_counter()
            rest = resp.read()
            t2 = time.perf_counter()
            assert resp.status == 200 and first + rest, resp.status
            mine.append((t2 - t0, t1 - t0))
        conn.close()
        with lock:
            latencies.extend(m[0] for m in mine)
            ttfbs.extend(m[1] for m in mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return latencies, ttfbs, time.perf_counter() - start


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()

    rows: list[tuple[str, int, list[float], list[float], float]] = []
    with FakeUpstream() as upstream:
        config = {
            "model_list": [
                {
                    "model_name": "up",
                    "params": {
                        "model": "openai/up",
                        "api_base": upstream.url,
                        "api_key": "sk-bench",
                    },
                },
                {
                    "model_name": "mock",
                    "params": {
                        "model": "mock/bench",
                        "mock_response": "Hello there!",
                        "mock_stream_delay_ms": 0,
                    },
                },
            ]
        }
        u = urlsplit(upstream.url)
        assert u.hostname and u.port
        with GatewayProcess(config) as gw:
            scenarios: list[tuple[str, Callable[[int], tuple[list[float], list[float], float]]]] = [
                (
                    "direct to upstream",
                    lambda c: run(
                        u.hostname or "",
                        u.port or 0,
                        u.path + "/chat/completions",
                        "up",
                        args.requests,
                        c,
                    ),
                ),
                (
                    "via gatewayd",
                    lambda c: run(
                        "127.0.0.1", gw.port, "/v1/chat/completions", "up", args.requests, c
                    ),
                ),
                (
                    "gatewayd mock (no upstream)",
                    lambda c: run(
                        "127.0.0.1", gw.port, "/v1/chat/completions", "mock", args.requests, c
                    ),
                ),
                (
                    "stream direct",
                    lambda c: run(
                        u.hostname or "",
                        u.port or 0,
                        u.path + "/chat/completions",
                        "up",
                        args.requests // 2,
                        c,
                        True,
                    ),
                ),
                (
                    "stream via gatewayd",
                    lambda c: run(
                        "127.0.0.1",
                        gw.port,
                        "/v1/chat/completions",
                        "up",
                        args.requests // 2,
                        c,
                        True,
                    ),
                ),
            ]
            for conc in (1, args.concurrency):
                for name, fn in scenarios:
                    fn(conc)  # warm up connections and code paths
                    lat, ttfb, wall = fn(conc)
                    rows.append((name, conc, lat, ttfb, wall))

    print(
        f"{'scenario':32} {'conc':>4} {'reqs':>6} {'p50 ms':>8} {'p99 ms':>8} {'ttfb p50':>9} {'req/s':>8}"
    )
    print("-" * 82)
    for name, conc, lat, ttfb, wall in rows:
        print(
            f"{name:32} {conc:>4} {len(lat):>6} {pct(lat, 0.5):>8.2f} {pct(lat, 0.99):>8.2f} "
            f"{statistics.median(ttfb) * 1000:>9.2f} {len(lat) / wall:>8.0f}"
        )


if __name__ == "__main__":
    main()
