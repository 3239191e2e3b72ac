"""``/metrics`` with ``--workers 2`` on the real daemon: exact sums right after the
requests, whichever worker answers the scrape, and counters that survive a worker's death."""

from __future__ import annotations

import os
import signal
import time

from conftest import GatewayFactory
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_api import raw
from test_e2e_workers import alive, chat, children, config, wait_until

from gatewayd.testing import FakeUpstream


def requests_total(port: int) -> tuple[float, str]:
    """(sum of gatewayd_requests_total for alias a, the answering worker's pid)."""
    status, headers, body = raw(port, "GET", "/metrics", b"", {"connection": "close"})
    assert status == 200
    total = sum(
        s.value
        for f in text_string_to_metric_families(body.decode())
        for s in f.samples
        if s.name == "gatewayd_requests_total" and s.labels.get("alias") == "a"
    )
    return total, headers.get("x-gatewayd-worker", "")


def test_counters_are_exact_and_survive_a_killed_worker(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(config(upstream, "a"), extra_args=["--workers", "2"])
    assert wait_until(lambda: "2 workers listening" in gw.log()), gw.log()
    pids = children(gw.pid)
    seen: set[int] = set()
    sent = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until both workers answered (bounded by time)
        status, pid, _ = chat(gw.port, "a")
        assert status == 200
        sent += 1
        seen.add(int(pid))
        if seen == pids and sent >= 6:
            break
    assert seen == pids
    scrapers: set[str] = set()
    for _ in range(40):  # right after the requests, from either worker: the exact sum
        total, pid = requests_total(gw.port)
        assert total == sent
        scrapers.add(pid)
        if len(scrapers) == 2:
            break
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: len(children(gw.pid)) == 2 and victim not in children(gw.pid))
    now = children(gw.pid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(alive(p) for p in now):
        time.sleep(0.05)
    status, _, _ = chat(gw.port, "a")
    assert status == 200
    sent += 1
    for _ in range(10):  # the dead worker's requests are still counted
        total, _ = requests_total(gw.port)
        assert total == sent
    gw.stop()
    assert wait_until(lambda: not any(alive(p) for p in pids | now), 10), "orphaned workers"
