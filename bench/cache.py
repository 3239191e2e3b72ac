"""The response cache's cost and gain: CPU per hit against CPU per proxied request, and
the upstream calls a repeated workload saves; prints a markdown table.

    python bench/cache.py [--requests 1000] [--distinct 20] [--concurrency 8]

One real gatewayd (``general_settings.cache: {type: memory}``) in front of the fake
OpenAI upstream (``gatewayd.testing.FakeUpstream``), both on 127.0.0.1. CPU is the
daemon's utime+stime from ``/proc`` over each phase, divided by its requests:

- proxied: every request a different body (misses: routed, recorded, stored),
- hit: the same body again and again (answered from the cache),
- the same two for streams (``stream: true``; a hit replays the recorded events).

Then the repeated workload: ``--requests`` requests over ``--distinct`` bodies, sent by
``--concurrency`` clients at once (identical ones in flight are coalesced), counting what
reached the upstream. A short run: it is a ratio, not a capacity figure.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gatewayd.testing import FakeUpstream, GatewayProcess, Reply

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def body(i: int, stream: bool = False) -> bytes:
    messages = [{"role": "user", "content": f"embed chunk number {i} of the corpus"}]
    return json.dumps({"model": "a", "messages": messages, "stream": stream}).encode()


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, data: bytes) -> str:
        self.conn.request(
            "POST", "/v1/chat/completions", data, {"content-type": "application/json"}
        )
        resp = self.conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
        return resp.getheader("x-gatewayd-cache") or "-"


def phase(gw: GatewayProcess, bodies: list[bytes]) -> float:
    """CPU ms per request for ``bodies`` sent one after another."""
    client = Client(gw.port)
    client.post(bodies[0])  # warm: connection, first-call paths
    before = cpu_seconds(gw.pid)
    for b in bodies:
        client.post(b)
    return (cpu_seconds(gw.pid) - before) * 1000.0 / len(bodies)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--distinct", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    n = args.requests
    with FakeUpstream() as up:
        # An upstream that takes a little time, as real ones do (coalescing needs it).
        up.set_default(Reply(delay=0.02))
        config: Any = {
            "model_list": [
                {"model_name": "a", "params": {"model": "openai/m", "api_base": up.url}}
            ],
            "general_settings": {"cache": {"type": "memory"}, "access_log": False},
        }
        with GatewayProcess(config) as gw:
            rows = []
            for stream in (False, True):
                kind = "stream" if stream else "JSON"
                base = 1_000_000 * (2 + stream)  # stream is not in the key: bodies apart
                proxied = phase(gw, [body(base + i, stream) for i in range(n)])
                hit = phase(gw, [body(-1 - stream, stream)] * n)
                rows.append((kind, proxied, hit))
            before = up.count()
            order = [random.randrange(args.distinct) for _ in range(n)]

            def client_run(c: int) -> list[str]:  # one connection, every c-th request
                client = Client(gw.port)
                return [client.post(body(-100 - k)) for k in order[c :: args.concurrency]]

            with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
                results = [r for rs in pool.map(client_run, range(args.concurrency)) for r in rs]
            calls = up.count() - before
    print("| request | CPU ms proxied | CPU ms hit | hit / proxied |")
    print("|---|---:|---:|---:|")
    for kind, proxied, hit in rows:
        print(f"| {kind} | {proxied:.3f} | {hit:.3f} | {hit / proxied:.2f}x |")
    print()
    print(
        f"repeated workload: {n} requests over {args.distinct} bodies, "
        f"{args.concurrency} at a time: {calls} upstream calls "
        f"({n - calls} saved, {100.0 * (n - calls) / n:.1f}%); "
        f"answers: {results.count('hit')} hit, {results.count('miss')} miss"
    )


if __name__ == "__main__":
    main()
