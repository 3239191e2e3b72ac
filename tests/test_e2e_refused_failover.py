"""A deployment whose port refuses connections, end to end (issue 17): the real daemon,
the seed's shape of configuration (``num_retries: 2``, a fallback), a closed loopback
port. The refused port is not retried after a backoff: the fallback answers at once."""

from __future__ import annotations

from conftest import GatewayFactory, openai_entry, sdk
from prometheus_client.parser import text_string_to_metric_families
from test_e2e_api import raw

from gatewayd.testing import FakeUpstream
from gatewayd.testing.behaviours import closed_port


def test_a_closed_port_goes_to_the_fallback_without_backoff(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    gw = gateway(
        {
            "model_list": [
                {"model_name": "local", "params": {"model": "openai/smol", "api_base": dead}},
                openai_entry("cloud", upstream),
            ],
            "general_settings": {"num_retries": 2, "fallbacks": [{"local": ["cloud"]}]},
        }
    )
    r = sdk(gw.base_url).chat.completions.with_raw_response.create(
        model="local", messages=[{"role": "user", "content": "hi"}]
    )
    assert r.http_response.status_code == 200
    assert len(upstream.requests) == 1
    status, _, body = raw(gw.port, "GET", "/metrics")
    assert status == 200
    samples = [
        s
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "gatewayd_retries_total" and s.labels.get("alias") == "local"
    ]
    # Before the fix: two retries of the refused port, 0.5 s and 1 s of backoff first.
    assert sum(s.value for s in samples) == 0
