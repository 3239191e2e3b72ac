"""GatewayMetrics in memory: its own registry, callback gauges, the reactor-lag probe, and
prometheus_client's multiprocess mode (several processes writing, one rendering the sum)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock

from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.observability.reactor_lag import ReactorLag

ROOT = Path(__file__).resolve().parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_instances_have_their_own_registry() -> None:
    a, b = GatewayMetrics(), GatewayMetrics()  # a second one would clash in a shared registry
    a.requests.inc("x", "d", "200", "chat")
    a.requests.inc("x", "d", "200", "chat")
    b.requests.inc("x", "d", "500", "chat")
    sa, sb = samples(a.render().decode()), samples(b.render().decode())
    labels = (("alias", "x"), ("deployment", "d"), ("dialect", "chat"), ("status", "200"))
    key = ("gatewayd_requests_total", labels)
    assert sa[key] == 2 and key not in sb
    assert "gatewayd_requests_total" not in REGISTRY._names_to_collectors


def test_callback_gauges_are_read_at_scrape_time() -> None:
    m = GatewayMetrics()
    state = {"n": 1.0}
    m.in_flight.collect = lambda: [(("a", "d1"), state["n"])]
    key = ("gatewayd_deployment_in_flight", (("alias", "a"), ("deployment", "d1")))
    assert samples(m.render().decode())[key] == 1
    state["n"] = 4
    assert samples(m.render().decode())[key] == 4
    m.in_flight.collect = lambda: []  # a reload removed the deployment: the series goes
    assert key not in samples(m.render().decode())


def test_count_usage_adds_prompt_and_completion_tokens() -> None:
    m = GatewayMetrics()
    m.count_usage("a", "d", 3, 5)
    m.count_usage("a", "d", 0, 0)
    s = samples(m.render().decode())
    base = (("alias", "a"), ("deployment", "d"))
    assert s[("gatewayd_tokens_total", (*base, ("kind", "completion")))] == 5
    assert s[("gatewayd_tokens_total", (*base, ("kind", "prompt")))] == 3


def test_reactor_lag_observes_how_late_each_tick_fires() -> None:
    clock = Clock()
    seen: list[float] = []
    ticks: list[int] = []
    probe = ReactorLag(clock, seen.append, interval=0.5, tick=lambda: ticks.append(1))
    probe.start()
    clock.advance(0.5)
    assert seen == [0.0]
    clock.advance(1.7)  # the loop was blocked: the tick due 0.5 s later fired 1.2 s late
    assert len(seen) == 2 and abs(seen[1] - 1.2) < 1e-9
    clock.advance(0.5)
    assert seen[2] == 0.0 and len(ticks) == 3
    probe.stop()
    clock.advance(5)
    assert len(seen) == 3 and not probe.running and not clock.getDelayedCalls()


_WRITER = """
import os, sys
from gatewayd.observability.metrics import GatewayMetrics
n = int(sys.argv[1])
m = GatewayMetrics()
m.requests.inc("a", "d", "200", "chat", amount=n)
m.upstream_latency.observe(0.2, "a", "d")
m.in_flight.collect = lambda: [(("a", "d"), float(n))]
m.refresh()
print(os.getpid())
"""

_READER = """
import sys
from gatewayd.observability.metrics import GatewayMetrics, multiprocess_dir
from prometheus_client.multiprocess import mark_process_dead
assert multiprocess_dir()
for pid in sys.argv[1:]:
    mark_process_dead(int(pid))
sys.stdout.write(GatewayMetrics().render().decode())
"""


def _run(code: str, *args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_multiprocess_mode_renders_the_sum_over_processes(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = _run(_WRITER, "3", env=env).strip()
    _run(_WRITER, "4", env=env)
    s = samples(_run(_READER, env=env))
    labels = (("alias", "a"), ("deployment", "d"))
    assert s[("gatewayd_requests_total", (*labels, ("dialect", "chat"), ("status", "200")))] == 7
    assert s[("gatewayd_upstream_latency_seconds_count", labels)] == 2
    assert s[("gatewayd_deployment_in_flight", labels)] == 7
    # A dead worker's live gauges leave the sum (the supervisor calls mark_process_dead);
    # its counters stay counted.
    s = samples(_run(_READER, first, env=env))
    assert s[("gatewayd_deployment_in_flight", labels)] == 4
    assert s[("gatewayd_requests_total", (*labels, ("dialect", "chat"), ("status", "200")))] == 7


def test_multiprocess_dir_must_exist(tmp_path: Path) -> None:
    code = "from gatewayd.observability.metrics import GatewayMetrics\nGatewayMetrics()"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "PROMETHEUS_MULTIPROC_DIR: " in done.stderr and "is not a directory" in done.stderr
