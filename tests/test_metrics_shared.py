"""``--workers N`` metrics in one test process: several "workers" (a SharedStore each, with
its own pid) write into one directory; any GatewayMetrics on it renders the sum, which
must be what one process given all the updates renders, byte for byte."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_render_metrics import OPENMETRICS, traffic

from gatewayd.observability.metric_merge import PAGE
from gatewayd.observability.metric_share import KEYS, SharedStore, forget_process, list_processes
from gatewayd.observability.metrics import GatewayMetrics

Key = tuple[str, tuple[tuple[str, str], ...]]
REQ = (
    "gatewayd_requests_total",
    (("alias", "a"), ("deployment", "d1"), ("dialect", "chat"), ("status", "200")),
)
IN_FLIGHT = ("gatewayd_deployment_in_flight", (("alias", "a"), ("deployment", "d1")))


def samples(m: GatewayMetrics) -> dict[Key, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(m.render().decode())
        for s in f.samples
    }


def worker(directory: Path, pid: int) -> GatewayMetrics:
    return GatewayMetrics(store=SharedStore(str(directory), pid=pid))


@pytest.fixture(autouse=True)
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_764_000_000.25)  # the _created samples


def test_the_sum_of_two_workers_is_what_one_process_renders(tmp_path: Path) -> None:
    a, b = worker(tmp_path, 1001), worker(tmp_path, 1002)
    one = GatewayMetrics()
    assert a.render() == b.render() == one.render()  # fresh: the unlabelled series at 0
    for m in (a, b, one):
        traffic(m)
    traffic(one)
    # Live gauges: summed (in flight, connections, streams), cooldown the maximum.
    one.in_flight.collect = lambda: [(("a", "d1"), 4.0), (("a", "d2"), 0.0)]
    one.upstream_connections.collect = lambda: [(("http://u:1", "idle"), 6.0)]
    one.open_streams = 2
    b.refresh()  # what b's reactor-lag tick does; a's scrape refreshes a itself
    for accept in (None, OPENMETRICS):
        assert a.exposition(accept) == one.exposition(accept)
        assert b.exposition(accept) == one.exposition(accept)
    reader = worker(tmp_path, 1003)  # a third one, new, that saw none of the updates
    assert reader.render() == one.render()


def test_every_scrape_sees_the_values_as_they_are_now(tmp_path: Path) -> None:
    a, b = worker(tmp_path, 1001), worker(tmp_path, 1002)
    for i in range(6):  # 6 requests spread over 2 workers
        (a if i % 2 else b).requests.inc("a", "d1", "200", "chat")
    assert samples(a)[REQ] == samples(b)[REQ] == 6
    b.requests.inc("a", "d1", "200", "chat", amount=3)
    b.upstream_latency.observe(0.2, "a", "d1")
    s = samples(a)  # a's caches from the scrape before must not hide b's updates
    assert s[REQ] == 9
    assert s[("gatewayd_upstream_latency_seconds_count", IN_FLIGHT[1])] == 1
    assert s[("gatewayd_upstream_latency_seconds_sum", IN_FLIGHT[1])] == 0.2


def test_series_made_after_a_scrape_appear_in_the_next(tmp_path: Path) -> None:
    a, b = worker(tmp_path, 1001), worker(tmp_path, 1002)
    a.requests.inc("a", "d1", "200", "chat")
    first = samples(b)
    b.requests.inc("x", "new", "502", "messages")  # new keys, one in each worker
    a.tokens.inc("a", "d1", "prompt", amount=7)
    second = samples(b)
    new = (
        "gatewayd_requests_total",
        (("alias", "x"), ("deployment", "new"), ("dialect", "messages"), ("status", "502")),
    )
    tokens = ("gatewayd_tokens_total", (*IN_FLIGHT[1], ("kind", "prompt")))
    assert new not in first and tokens not in first
    assert second[new] == 1 and second[tokens] == 7 and second[REQ] == 1


def test_a_restarted_worker_keeps_its_counters_and_drops_its_gauges(tmp_path: Path) -> None:
    a, b = worker(tmp_path, 1001), worker(tmp_path, 1002)
    a.requests.inc("a", "d1", "200", "chat", amount=5)
    a.last_reload.set(1000.0)
    a.in_flight.collect = lambda: [(("a", "d1"), 3.0)]
    a.upstream_connections.collect = lambda: [(("http://only-a:1", "idle"), 1.0)]
    a.refresh()
    b.requests.inc("a", "d1", "200", "chat")
    b.last_reload.set(900.0)
    s = samples(b)
    assert s[REQ] == 6 and s[IN_FLIGHT] == 3
    assert s[("gatewayd_config_last_reload_success_timestamp_seconds", ())] == 1000.0
    forget_process(str(tmp_path), 1001)  # a died (what the supervisor does)
    c = worker(tmp_path, 1003)  # and was restarted
    c.requests.inc("a", "d1", "200", "chat", amount=2)
    for m in (b, c):
        s = samples(m)
        assert s[REQ] == 8  # counters never go down when a worker restarts
        assert IN_FLIGHT not in s  # a's in-flight requests went with it (no one else has d1)
        assert (
            "gatewayd_upstream_connections",
            (("origin", "http://only-a:1"), ("state", "idle")),
        ) not in s
        assert s[("gatewayd_config_last_reload_success_timestamp_seconds", ())] == 1000.0
    b.requests.inc("a", "d1", "200", "chat")
    assert samples(b)[REQ] == 9  # and the dead one's counters, kept aside, still add up


def test_a_reused_pid_does_not_bring_back_the_dead_ones_gauges(tmp_path: Path) -> None:
    a = worker(tmp_path, 1001)
    a.requests.inc("a", "d1", "200", "chat", amount=4)
    a.in_flight.collect = lambda: [(("a", "d1"), 3.0)]
    a.refresh()
    again = worker(tmp_path, 1001)  # a died unnoticed; a new process got its pid
    s = samples(again)
    assert s[REQ] == 4 and s.get(IN_FLIGHT, 0) == 0
    assert sum(p.pid == 1001 for p in list_processes(str(tmp_path))) == 2  # both sets of counters


def test_the_files_grow_past_their_first_size(tmp_path: Path) -> None:
    a, b = worker(tmp_path, 1001), worker(tmp_path, 1002)
    n = 600  # 20 slots per latency series: past the first 8,192 slots, and many pages
    for i in range(n):
        a.upstream_latency.observe(0.003, "a", f"d{i}")
        b.requests.inc("a", f"d{i}", "200", "chat", amount=i)
    first = samples(b)
    a.upstream_latency.observe(0.003, "a", "d0")  # an update on the first page only
    b.requests.inc("a", f"d{n - 1}", "200", "chat")  # and one on the last
    s = samples(a)
    assert (
        s[("gatewayd_upstream_latency_seconds_count", (("alias", "a"), ("deployment", "d0")))] == 2
    )
    assert (
        s[("gatewayd_upstream_latency_seconds_count", (("alias", "a"), ("deployment", "d7")))] == 1
    )
    last = (
        "gatewayd_requests_total",
        (("alias", "a"), ("deployment", f"d{n - 1}"), ("dialect", "chat"), ("status", "200")),
    )
    assert first[last] == n - 1 and s[last] == n
    assert len(s) == len(first) and n * 20 > 8192 and n * 20 > 10 * PAGE


def test_a_torn_key_line_is_skipped(tmp_path: Path) -> None:
    a = worker(tmp_path, 1001)
    a.requests.inc("a", "d1", "200", "chat")
    with open(tmp_path / KEYS, "ab") as f:  # a worker killed in the middle of a write
        f.write(b'["sum", 99, 1, "gatewayd_requests_total", ["a", "d')
    b = worker(tmp_path, 1002)
    b.requests.inc("a", "d2", "200", "chat")
    s = samples(a)
    assert s[REQ] == 1
    assert (
        s[
            (
                "gatewayd_requests_total",
                (("alias", "a"), ("deployment", "d2"), ("dialect", "chat"), ("status", "200")),
            )
        ]
        == 1
    )


def test_shared_series_check_their_labels_and_amounts(tmp_path: Path) -> None:
    m = worker(tmp_path, 1001)
    with pytest.raises(ValueError):
        m.retries.inc("a", amount=-1)
    with pytest.raises(ValueError):
        m.retries.inc("a", "b")
    with pytest.raises(ValueError):
        m.upstream_latency.observe(0.1, "only-alias")
    assert not m.native and m.shared is not None


def test_the_process_store_is_one_per_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    a, b = GatewayMetrics(), GatewayMetrics()
    assert a.shared is not None and b.shared is not None and a.shared.store is b.shared.store
    a.requests.inc("a", "d1", "200", "chat")
    b.requests.inc("a", "d1", "200", "chat")
    assert samples(a)[REQ] == 2
    assert [p.pid for p in list_processes(str(tmp_path))] == [os.getpid()]
