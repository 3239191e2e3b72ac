"""What keys and limits cost per request: the mock provider (no upstream) behind the
real daemon, without keys, with a limited key on the in-memory store, and with the same
key on a shared redis-server.

    python bench/limits.py [--requests 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from typing import Any

from gatewayd.testing import GatewayProcess
from gatewayd.testing.redis import RedisServer, redis_available

KEY = "sk-bench-key"
BODY = json.dumps(
    {"model": "mock", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
).encode()


def run(port: int, requests: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
        for _ in range(requests // concurrency):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", BODY, headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            mine.append(time.perf_counter() - t0)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return latencies, time.perf_counter() - start


def config(keys: bool, store: str | None) -> dict[str, Any]:
    c: dict[str, Any] = {
        "model_list": [
            {
                "model_name": "mock",
                "params": {"model": "mock/bench", "mock_response": "Hello there!"},
            }
        ],
        "general_settings": {} if store is None else {"state_store": store},
    }
    if keys:
        c["keys"] = [
            {
                "key": KEY,
                "name": "bench",
                "rpm": 10**9,
                "tpm": 10**12,
                "max_parallel_requests": 10**6,
                "budget": {"tokens": 10**12, "period": "1d"},
            }
        ]
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    print(f"{'scenario':40} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    scenarios: list[tuple[str, bool, bool]] = [
        ("no keys", False, False),
        ("key with rpm/tpm/parallel/budget, memory", True, False),
    ]
    if redis_available():
        scenarios.append(("the same key, on redis-server", True, True))
    for name, keys, use_redis in scenarios:
        redis = RedisServer().start() if use_redis else None
        try:
            with GatewayProcess(config(keys, redis.url if redis else None)) as gw:
                run(gw.port, 200, args.concurrency)  # warm up
                lat, wall = run(gw.port, args.requests, args.concurrency)
        finally:
            if redis is not None:
                redis.close()
        lat.sort()
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
        print(f"{name:40} {p50:8.2f} {p99:8.2f} {len(lat) / wall:8.0f}")


if __name__ == "__main__":
    main()
