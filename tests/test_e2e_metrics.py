"""GET /metrics: rendered by prometheus_client, parsed here by its own parsers; counts
checked against the requests sent; open unless configured."""

from __future__ import annotations

import http.client
import signal
import time
from collections.abc import Callable
from pathlib import Path

from conftest import MASTER_KEY, GatewayFactory, openai_entry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_api import CHAT, post, raw

from gatewayd.testing import (
    Error,
    FakeUpstream,
    GatewayProcess,
    Stream,
    run_gateway_expecting_failure,
)

#: (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by the library's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(port: int, headers: dict[str, str] | None = None) -> Samples:
    status, hdrs, body = raw(port, "GET", "/metrics", headers=headers)
    assert status == 200, body
    assert hdrs["content-type"].startswith("text/plain")
    return parse(body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_metrics_count_requests_retries_and_fallbacks(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [
                openai_entry("a", upstream, api_key="sk-metrics-secret"),
                openai_entry("b", upstream2),
            ],
            "general_settings": {"num_retries": 1, "fallbacks": [{"a": ["b"]}]},
        }
    )
    upstream.enqueue(Error(503))
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})[0] == 200
    upstream.set_default(Error(500))
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})[0] == 200
    for _ in range(3):
        assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "b"})[0] == 200
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "nope"})[0] == 404
    status, _, body = raw(gw.port, "GET", "/metrics")
    assert status == 200 and "sk-metrics-secret" not in body.decode()
    m = parse(body.decode())
    dep_a = f"openai/up-model@127.0.0.1:{upstream.port}"
    dep_b = f"openai/up-model@127.0.0.1:{upstream2.port}"
    req = "gatewayd_requests_total"
    assert value(m, req, alias="a", deployment=dep_a, status="200", dialect="chat") == 1
    assert value(m, req, alias="a", deployment=dep_b, status="200", dialect="chat") == 1
    assert value(m, req, alias="b", deployment=dep_b, status="200", dialect="chat") == 3
    # Every routed request counted once; the unknown alias is not a series.
    assert sum(v for (n, _), v in m.items() if n == req) == 5
    assert value(m, "gatewayd_retries_total", alias="a") == 2
    assert value(m, "gatewayd_fallbacks_total", alias="a", fallback="b") == 1
    att = "gatewayd_upstream_attempts_total"
    assert value(m, att, alias="a", deployment=dep_a, outcome="http_503") == 1
    assert value(m, att, alias="a", deployment=dep_a, outcome="http_500") == 2
    assert value(m, att, alias="a", deployment=dep_a, outcome="ok") == 1
    # Attempts count under the alias tried: the fallback's own.
    assert value(m, att, alias="b", deployment=dep_b, outcome="ok") == 4
    lat = "gatewayd_upstream_latency_seconds_count"
    assert value(m, lat, alias="b", deployment=dep_b) == 4
    assert value(m, "gatewayd_overhead_seconds_count") == 3  # first-attempt JSON answers only
    tokens = value(m, "gatewayd_tokens_total", alias="b", deployment=dep_b, kind="completion")
    assert tokens > 0
    assert value(m, "gatewayd_streams_in_flight") == 0


def test_metrics_openmetrics_when_the_scraper_asks(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("a", upstream)]})
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})[0] == 200
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, body = raw(gw.port, "GET", "/metrics", headers={"accept": accept})
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}  # type: ignore[no-untyped-call]
    assert families["gatewayd_requests"].type == "counter"
    (sample,) = [s for s in families["gatewayd_requests"].samples if s.name.endswith("_total")]
    assert sample.labels["alias"] == "a" and sample.value == 1


def test_stream_and_connection_gauges(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway({"model_list": [openai_entry("a", upstream)]})
    upstream.enqueue(Stream(events=3))
    status, _, body = raw(
        gw.port,
        "POST",
        "/v1/chat/completions",
        b'{"model": "a", "stream": true, "stream_options": {"include_usage": true},'
        b' "messages": [{"role": "user", "content": "Hi"}]}',
        {"content-type": "application/json"},
    )
    assert status == 200 and b"[DONE]" in body
    dep = f"openai/up-model@127.0.0.1:{upstream.port}"
    # Two idle keep-alive connections held open by this test, plus the scrape's own.
    held = [http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10) for _ in range(2)]
    try:
        for c in held:
            c.request("GET", "/health/liveness")
            c.getresponse().read()
        assert wait_until(lambda: value(scrape(gw.port), "gatewayd_client_connections") == 3)
    finally:
        for c in held:
            c.close()
    assert wait_until(lambda: value(scrape(gw.port), "gatewayd_client_connections") == 1)
    m = scrape(gw.port)
    assert value(m, "gatewayd_time_to_first_token_seconds_count", alias="a", deployment=dep) == 1
    assert value(m, "gatewayd_tokens_total", alias="a", deployment=dep, kind="completion") > 0
    assert value(m, "gatewayd_streams_in_flight") == 0
    # The upstream connection went back to its pool: idle, not in use.
    origin = f"http://127.0.0.1:{upstream.port}"
    pool = "gatewayd_upstream_connections"
    assert value(m, pool, origin=origin, state="idle") == 1
    assert value(m, pool, origin=origin, state="in_use") == 0


def test_reactor_lag_and_reload_metrics(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    config = {"model_list": [openai_entry("a", upstream)]}
    gw: GatewayProcess = gateway(config)
    started = value(scrape(gw.port), "gatewayd_config_last_reload_success_timestamp_seconds")
    assert abs(started - time.time()) < 600  # a Unix time, set at start
    # The probe fires twice a second.
    assert wait_until(lambda: value(scrape(gw.port), "gatewayd_reactor_lag_seconds_count") >= 2)
    m = scrape(gw.port)
    assert value(m, "gatewayd_reactor_lag_seconds_bucket", le="+Inf") >= 2
    assert value(m, "gatewayd_config_reloads_total", result="ok") == 0

    gw.write_config(config)
    gw.send_signal(signal.SIGHUP)
    reloads = "gatewayd_config_reloads_total"
    assert wait_until(lambda: value(scrape(gw.port), reloads, result="ok") == 1)
    reloaded = value(scrape(gw.port), "gatewayd_config_last_reload_success_timestamp_seconds")
    assert reloaded >= started

    gw.write_config("model_list: 7\n")
    gw.send_signal(signal.SIGHUP)
    assert wait_until(lambda: value(scrape(gw.port), reloads, result="error") == 1)
    m = scrape(gw.port)
    assert value(m, reloads, result="ok") == 1
    assert value(m, "gatewayd_config_last_reload_success_timestamp_seconds") == reloaded


def test_metrics_can_require_the_master_key(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("a", upstream)],
            "general_settings": {
                "master_key": MASTER_KEY,
                "require_auth_for_metrics_endpoint": True,
            },
        }
    )
    assert raw(gw.port, "GET", "/metrics")[0] == 401
    assert (
        raw(gw.port, "GET", "/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"})[0] == 200
    )
    gw2 = gateway(
        {
            "model_list": [openai_entry("a", upstream)],
            "general_settings": {"master_key": MASTER_KEY},
        }
    )
    assert raw(gw2.port, "GET", "/metrics")[0] == 200


def test_two_processes_sharing_a_multiproc_dir_report_the_sum(
    gateway: GatewayFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """What a --workers supervisor relies on: each daemon writes its samples into
    PROMETHEUS_MULTIPROC_DIR, and /metrics on any of them renders the sum."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    config = {"model_list": [openai_entry("a", upstream)]}
    one, two = gateway(config, env=env), gateway(config, env=env)
    for gw, n in ((one, 2), (two, 3)):
        for _ in range(n):
            assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})[0] == 200
    dep = f"openai/up-model@127.0.0.1:{upstream.port}"
    for gw in (one, two):
        m = scrape(gw.port)
        req = "gatewayd_requests_total"
        assert value(m, req, alias="a", deployment=dep, status="200", dialect="chat") == 5
        assert value(m, "gatewayd_upstream_latency_seconds_count", alias="a", deployment=dep) == 5
        assert value(m, "gatewayd_deployment_cooldown", alias="a", deployment=dep) == 0
    # Live gauges (copied into the shared files twice a second): one pooled upstream
    # connection per process, idle.
    origin = f"http://127.0.0.1:{upstream.port}"
    idle = "gatewayd_upstream_connections"
    assert wait_until(lambda: value(scrape(one.port), idle, origin=origin, state="idle") == 2)


def test_a_missing_multiproc_dir_refuses_to_start(tmp_path: Path) -> None:
    code, out = run_gateway_expecting_failure(
        {"model_list": [{"model_name": "m", "params": {"model": "mock/x"}}]},
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "nope")},
    )
    assert code == 2 and "PROMETHEUS_MULTIPROC_DIR" in out and "Traceback" not in out
