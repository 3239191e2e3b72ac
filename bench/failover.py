"""How long a fallback past dead local deployments takes: an alias with three
deployments on refused ports (``localhost`` and ``127.0.0.1``), falling back to the
mock provider, timed through the real daemon.

    python bench/failover.py [--requests 20]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time

from gatewayd.testing import GatewayProcess, closed_port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    hosts = ["localhost", "127.0.0.1", "localhost"]
    config = {
        "model_list": [
            {
                "model_name": "local",
                "params": {"model": f"vllm/m{i}", "api_base": f"http://{h}:{closed_port()}/v1"},
            }
            for i, h in enumerate(hosts)
        ]
        + [{"model_name": "demo", "params": {"model": "mock/demo"}}],
        "general_settings": {
            "num_retries": 2,
            "fallbacks": [{"local": ["demo"]}],
            "allowed_fails": 1_000_000,
        },
    }
    body = json.dumps({"model": "local", "messages": [{"role": "user", "content": "hi"}]})
    proc = GatewayProcess(config).start()
    try:
        times = []
        for _ in range(args.requests):
            conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=30)
            start = time.monotonic()
            conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            times.append(time.monotonic() - start)
            assert resp.status == 200 and resp.getheader("x-gatewayd-fallback") == "demo"
            conn.close()
    finally:
        proc.stop()
    print(
        f"3 refused deployments then the fallback: median {statistics.median(times) * 1000:.1f} ms, "
        f"max {max(times) * 1000:.1f} ms over {len(times)} requests"
    )


if __name__ == "__main__":
    main()
