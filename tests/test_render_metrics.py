"""GatewayMetrics' own storage renders exactly what prometheus_client renders.

The same updates go into a native GatewayMetrics and into one backed by prometheus_client's
metrics (as in multiprocess mode); both formats must come out byte for byte the same, so
the families, names, labels, order and number formatting a scraper sees do not depend on
the storage. Rendering caches each series' text: a changed series must show its change.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gatewayd.observability.metric_store import fmt
from gatewayd.observability.metrics import GatewayMetrics

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def traffic(m: GatewayMetrics) -> None:
    m.requests.inc("a", "d1", "200", "chat")
    m.requests.inc("a", "d1", "200", "chat")
    m.requests.inc("a", 'we"ird\\dep\nx', "502", "messages")
    m.attempts.inc("a", "d1", "ok")
    m.attempts.inc("a", "d2", "timeout")
    m.retries.inc("a")
    m.fallbacks.inc("a", "b")
    m.stream_failures.inc("a", "d1")
    m.count_usage("a", "d1", 12, 3_000_000)
    m.key_requests.inc("team-1", "a", "200")
    m.key_tokens.inc("team-1", "a", "prompt", amount=12)
    m.spend.inc("team-1", "a", "d1", amount=0.000123)
    m.state_store_outages.inc()
    for v in (0.0001, 0.0005, 0.003, 0.2, 7.0, 1000.0):  # edges, and past the last bound
        m.upstream_latency.observe(v, "a", "d1")
    m.ttft.observe(0.05, "a", "d1")
    m.overhead.observe(0.0004)
    m.reactor_lag.observe(0.0)
    m.reloads.inc("ok")
    m.last_reload.set(1_700_000_000.5)
    m.in_flight.collect = lambda: [(("a", "d1"), 2.0), (("a", "d2"), 0.0)]
    m.cooldown.collect = lambda: [(("a", "d1"), 0.0), (("a", "d2"), 1.0)]
    m.upstream_connections.collect = lambda: [(("http://u:1", "idle"), 3.0)]
    m.open_streams = 1


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> tuple[GatewayMetrics, GatewayMetrics]:
    monkeypatch.setattr(time, "time", lambda: 1_764_000_000.25)  # the _created samples
    native, reference = GatewayMetrics(), GatewayMetrics(native=False)
    assert native.native and not reference.native
    return native, reference


def test_text_format_is_prometheus_clients_byte_for_byte(
    pair: tuple[GatewayMetrics, GatewayMetrics],
) -> None:
    native, reference = pair
    assert native.render() == reference.render()  # fresh: the unlabelled series at 0
    traffic(native)
    traffic(reference)
    assert native.render() == reference.render()
    body, ctype = native.exposition(None)
    assert (body, ctype) == reference.exposition(None)
    assert b'deployment="we\\"ird\\\\dep\\nx"' in body


def test_openmetrics_is_prometheus_clients_byte_for_byte(
    pair: tuple[GatewayMetrics, GatewayMetrics],
) -> None:
    native, reference = pair
    traffic(native)
    traffic(reference)
    assert native.exposition(OPENMETRICS) == reference.exposition(OPENMETRICS)
    assert native.exposition(OPENMETRICS)[0].endswith(b"# EOF\n")


def test_the_registry_still_collects_the_same_samples(
    pair: tuple[GatewayMetrics, GatewayMetrics],
) -> None:
    native, reference = pair
    traffic(native)
    traffic(reference)
    assert generate_latest(native.registry) == reference.render()


def test_a_series_changed_after_a_scrape_shows_its_new_value() -> None:
    m = GatewayMetrics()
    m.requests.inc("a", "d", "200", "chat")
    m.upstream_latency.observe(0.2, "a", "d")
    m.render()  # caches every series' text
    m.requests.inc("a", "d", "200", "chat", amount=2)
    m.upstream_latency.observe(0.002, "a", "d")
    m.requests.inc("a", "d2", "200", "chat")  # a new series after the first render
    s = {
        (x.name, tuple(sorted(x.labels.items()))): x.value
        for f in text_string_to_metric_families(m.render().decode())
        for x in f.samples
    }
    base = (("alias", "a"), ("deployment", "d"))
    assert s[("gatewayd_requests_total", (*base, ("dialect", "chat"), ("status", "200")))] == 3
    assert s[("gatewayd_upstream_latency_seconds_count", base)] == 2
    assert s[("gatewayd_upstream_latency_seconds_bucket", (*base, ("le", "0.0025")))] == 1
    assert s[("gatewayd_upstream_latency_seconds_bucket", (*base, ("le", "0.25")))] == 2
    assert ("gatewayd_requests_total", (("alias", "a"), ("deployment", "d2"), *base[2:])) in {
        (k[0], k[1][:2]) for k in s
    }


def test_counters_refuse_negative_increments_and_wrong_label_counts() -> None:
    m = GatewayMetrics()
    with pytest.raises(ValueError):
        m.retries.inc("a", amount=-1)
    with pytest.raises(ValueError):
        m.retries.inc("a", "b")
    with pytest.raises(ValueError):
        m.upstream_latency.observe(0.1, "only-alias")


@pytest.mark.parametrize(
    "value",
    [0.0, 1.0, 0.1, 1e-7, 999_999.0, 1e6, 1234567.0, 3e21, float("inf"), -float("inf"), -2.5],
)
def test_numbers_are_written_as_prometheus_client_writes_them(value: float) -> None:
    from prometheus_client.utils import floatToGoString

    assert fmt(value) == floatToGoString(value)  # type: ignore[no-untyped-call]
    assert fmt(float("nan")) == "NaN"


def test_gctune_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    import subprocess
    import sys

    code = (
        "import gc; from gatewayd.daemon import gc_tuning as gctune; before = gc.get_freeze_count(); "
        "gctune.freeze_startup_heap(); "
        "print(before, gc.get_freeze_count() > 1000, gc.get_threshold()[0] == gctune.YOUNG_THRESHOLD)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split() == ["0", "True", "True"]


_REFRESHES = """
import sys
from gatewayd.observability.metrics import GatewayMetrics
m = GatewayMetrics()
assert not m.native
state = {("a", "d1"): 2.0, ("a", "d2"): 1.0}
m.in_flight.collect = lambda: list(state.items())
out = []
m.refresh()
out.append(m.render().decode())
state[("a", "d1")] = 5.0  # changed: written again
m.refresh()
out.append(m.render().decode())
del state[("a", "d2")]  # a reload removed it: 0 in the files
m.refresh()
m.refresh()
out.append(m.render().decode())
sys.stdout.write("\\n=====\\n".join(out))
"""


def test_multiprocess_gauges_write_changes_and_zero_what_went(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _REFRESHES], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    first, second, third = (
        {
            tuple(sorted(x.labels.items())): x.value
            for f in text_string_to_metric_families(text)
            for x in f.samples
            if x.name == "gatewayd_deployment_in_flight"
        }
        for text in done.stdout.split("\n=====\n")
    )
    d1, d2 = (("alias", "a"), ("deployment", "d1")), (("alias", "a"), ("deployment", "d2"))
    assert first == {d1: 2.0, d2: 1.0}
    assert second == {d1: 5.0, d2: 1.0}
    assert third == {d1: 5.0, d2: 0.0}
