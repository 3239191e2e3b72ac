"""What one routing decision costs as an alias grows: CPU microseconds per request
through :class:`gatewayd.routing.Router` for 1, 100 and 1,000 deployments of one alias.

    python bench/routing_scale.py [--requests 3000] [--sizes 1,100,1000]

No network and no reactor: the providers answer at once (or fail once, for the
retry row), on a fake clock, so the numbers are the router's own work (balancing,
health, retries, metrics), which is what grows with the number of deployments.
"""

from __future__ import annotations

import argparse
import random
import time

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gatewayd.config import Deployment, parse_config
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    FailureKind,
    Provider,
    ProviderRequest,
    UpstreamFailure,
    UpstreamResponse,
    openai_error,
)
from gatewayd.routing import Router, build_table

OK = UpstreamResponse(200, body=b"{}")


class Instant(Provider):
    """Answers at once; ``flaky`` makes every other call a 503 (one retry per request)."""

    def __init__(self, deployment: Deployment, flaky: bool, calls: list[int]) -> None:
        super().__init__(deployment)
        self.flaky = flaky
        self.calls = calls  # shared by every deployment: attempt 1 fails, attempt 2 succeeds

    def send(self, request: ProviderRequest, limits: AttemptLimits) -> Deferred[UpstreamResponse]:
        self.calls[0] += 1
        if self.flaky and self.calls[0] % 2:
            return fail(UpstreamFailure(FailureKind.HTTP, 503, openai_error("overloaded")))
        return succeed(OK)


def config_text(n: int, extra: str, general: str) -> str:
    entries = "".join(
        f"  - model_name: a\n"
        f"    params: {{model: openai/m, api_base: 'http://127.0.0.1:9/v1', api_key: k{extra}}}\n"
        f"    model_info: {{id: d{i}}}\n"
        for i in range(n)
    )
    return "model_list:\n" + entries + "general_settings:\n  allowed_fails: 1000000\n" + general


def us_per_request(n: int, requests: int, extra: str, general: str, flaky: bool) -> float:
    clock = Clock()
    cfg = parse_config(config_text(n, extra, general), environ={})
    calls = [0]
    table = build_table(cfg, lambda d: Instant(d, flaky, calls))
    router = Router(table, clock, random.Random(1))
    request = ProviderRequest(Endpoint.CHAT, {"model": "a"})
    results: list[object] = []
    for _ in range(200):  # warm up
        router.route("a", request).addBoth(results.append)
        clock.advance(10)  # past any backoff sleep
    t0 = time.process_time()
    for _ in range(requests):
        router.route("a", request).addBoth(results.append)
        clock.advance(10)
    took = time.process_time() - t0
    assert len(results) == requests + 200
    failed = [r for r in results if isinstance(r, Failure)]
    assert not failed, failed[0]
    return took / requests * 1e6


SCENARIOS: list[tuple[str, str, str, bool]] = [
    ("simple-shuffle, no weights", "", "", False),
    ("simple-shuffle, weights", ", weight: 2", "", False),
    ("least-busy", "", "  routing_strategy: least-busy\n", False),
    ("max_parallel_requests: 5", ", max_parallel_requests: 5", "", False),
    ("a 503 then a retry", "", "  num_retries: 1\n", True),
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--sizes", default="1,100,1000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    header = f"{'CPU µs per request':<30}" + "".join(f"{n:>10}" for n in sizes)
    print(header)
    print("-" * len(header))
    for name, extra, general, flaky in SCENARIOS:
        cells = [us_per_request(n, args.requests, extra, general, flaky) for n in sizes]
        print(f"{name:<30}" + "".join(f"{c:>10.1f}" for c in cells))


if __name__ == "__main__":
    main()
