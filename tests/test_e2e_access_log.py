"""``access_log`` and ``access_log_sample_rate``: the access line can be turned off or
sampled, and requests are still counted in the metrics either way."""

from __future__ import annotations

import time

from conftest import GatewayFactory, openai_entry
from test_config import assert_names, error_of
from test_e2e_api import CHAT, post, raw
from test_e2e_metrics import parse, value

from gatewayd.testing import FakeUpstream


def _access_lines(gw: object) -> list[str]:
    return [x for x in gw.log().splitlines() if "gatewayd.access" in x]  # type: ignore[attr-defined]


def _settle(gw: object, marker: str, timeout: float = 5.0) -> None:
    """Wait (bounded) until a line we know is written after the requests shows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and marker not in gw.log():  # type: ignore[attr-defined]
        time.sleep(0.05)


def test_access_log_false_writes_no_line_but_counts(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(
        {"model_list": [openai_entry("a", upstream)], "general_settings": {"access_log": False}}
    )
    for _ in range(3):
        assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})[0] == 200
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "nope"})[0] == 404
    status, _, body = raw(gw.port, "GET", "/metrics")
    assert status == 200
    m = parse(body.decode())
    assert sum(v for (n, _), v in m.items() if n == "gatewayd_requests_total") == 3
    assert _access_lines(gw) == []


def test_sampling_keeps_every_error_and_drops_successes_at_zero(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("a", upstream)],
            "general_settings": {"access_log_sample_rate": 0},
        }
    )
    for _ in range(5):
        assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})[0] == 200
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "nope"})[0] == 404
    _settle(gw, '" 404 ')
    lines = _access_lines(gw)
    assert len(lines) == 1 and '" 404 ' in lines[0], lines
    m = parse(raw(gw.port, "GET", "/metrics")[2].decode())
    dep = f"openai/up-model@127.0.0.1:{upstream.port}"
    assert (
        value(m, "gatewayd_requests_total", alias="a", deployment=dep, status="200", dialect="chat")
        == 5
    )


def test_sampling_at_one_logs_every_request(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("a", upstream)],
            "general_settings": {"access_log_sample_rate": 1.0},
        }
    )
    for i in range(4):
        post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"}, {"x-request-id": f"s-{i}"})
    _settle(gw, "request_id=s-3")
    assert sum(1 for x in _access_lines(gw) if "request_id=s-" in x) == 4


def test_a_sample_rate_above_one_is_refused_by_name() -> None:
    e = error_of({"model_list": [], "general_settings": {"access_log_sample_rate": 2}})
    assert_names(e, "general_settings.access_log_sample_rate", "from 0 to 1")
    e = error_of({"model_list": [], "general_settings": {"access_log": "sometimes"}})
    assert_names(e, "general_settings.access_log", "true or false")
