"""GET /metrics: Prometheus text with the documented label names, open unless configured."""

from __future__ import annotations

import re

from conftest import MASTER_KEY, GatewayFactory, openai_entry
from test_e2e_api import CHAT, post, raw

from gatewayd.testing import Error, FakeUpstream


def samples(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{.*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


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
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "b"})[0] == 200
    status, headers, body = raw(gw.port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert "sk-metrics-secret" not in text
    requests = samples(text, "gatewayd_requests_total")
    dep_a = f"openai/up-model@127.0.0.1:{upstream.port}"
    dep_b = f"openai/up-model@127.0.0.1:{upstream2.port}"
    assert requests[f'{{alias="a",deployment="{dep_a}",status="200",dialect="chat"}}'] == 1
    assert requests[f'{{alias="a",deployment="{dep_b}",status="200",dialect="chat"}}'] == 1
    assert samples(text, "gatewayd_retries_total")['{alias="a"}'] == 2
    assert samples(text, "gatewayd_fallbacks_total")['{alias="a",fallback="b"}'] == 1
    attempts = samples(text, "gatewayd_upstream_attempts_total")
    assert attempts[f'{{alias="a",deployment="{dep_a}",outcome="http_503"}}'] == 1
    assert attempts[f'{{alias="a",deployment="{dep_a}",outcome="http_500"}}'] == 2
    assert samples(text, "gatewayd_upstream_latency_seconds_count")
    assert samples(text, "gatewayd_overhead_seconds_count")[""] == 1
    tokens = samples(text, "gatewayd_tokens_total")
    assert tokens[f'{{alias="b",deployment="{dep_b}",kind="completion"}}'] > 0
    assert samples(text, "gatewayd_streams_in_flight")[""] == 0


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
