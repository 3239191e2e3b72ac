"""Does the daemon hold up? Rounds of JSON requests, streams and abandoned streams
through the real daemon; prints its RSS and in-flight gauges after each round.

    python bench/soak.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import socket
import time
import urllib.request

from overhead import run

from gatewayd.testing import FakeUpstream, GatewayProcess


def abandon_streams(port: int, n: int) -> None:
    """Start ``n`` streams and hang up after the first bytes."""
    body = json.dumps({"model": "up", "stream": True, "messages": []}).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head % len(body) + body)
            s.recv(100)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    with FakeUpstream() as upstream:
        config = {
            "model_list": [
                {
                    "model_name": "up",
                    "params": {"model": "openai/up", "api_base": upstream.url, "api_key": "k"},
                },
                {"model_name": "mock", "params": {"model": "mock/m", "mock_stream_delay_ms": 0}},
            ]
        }
        with GatewayProcess(config) as gw:
            run("127.0.0.1", gw.port, "/v1/chat/completions", "up", 2000, 8)  # warm up
            base = gw.rss_kib()
            print(
                f"{'round':>5} {'requests':>9} {'RSS KiB':>8} {'growth KiB':>11} {'in flight':>9}"
            )
            total = 0
            for r in range(1, args.rounds + 1):
                run("127.0.0.1", gw.port, "/v1/chat/completions", "up", 4000, 8)
                run("127.0.0.1", gw.port, "/v1/chat/completions", "mock", 1000, 8, True)
                abandon_streams(gw.port, 200)
                total += 5200
                time.sleep(0.5)
                metrics = urllib.request.urlopen(f"{gw.url}/metrics", timeout=10).read().decode()
                in_flight = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in metrics.splitlines()
                    if line.startswith(
                        ("gatewayd_streams_in_flight", "gatewayd_deployment_in_flight")
                    )
                )
                rss = gw.rss_kib()
                print(f"{r:>5} {total:>9} {rss:>8} {rss - base:>11} {in_flight:>9.0f}")


if __name__ == "__main__":
    main()
