"""--log-format json / general_settings.log_format: one JSON object per line and event."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from conftest import MASTER_KEY, UPSTREAM_KEY, GatewayFactory, openai_entry
from test_e2e_api import CHAT, post

from gatewayd.observability.log import event_as_json
from gatewayd.testing import Error, FakeUpstream, GatewayProcess, run_gateway_expecting_failure

PROMPT = "json-log-prompt-text-4242"


def _records(gw: GatewayProcess, want: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every line of the daemon's output, each parsed as JSON (so each must be)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [x for x in gw.log().splitlines() if x.strip()]
        records = [json.loads(x) for x in lines]
        access = [r for r in records if r["logger"] == "gatewayd.access"]
        if len(access) >= want or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["flag", "config"])
def test_json_logs_one_object_per_event(
    gateway: GatewayFactory, upstream: FakeUpstream, how: str
) -> None:
    general: dict[str, Any] = {"master_key": MASTER_KEY, "num_retries": 1}
    if how == "config":
        general["log_format"] = "json"
    gw = gateway(
        {"model_list": [openai_entry("a", upstream)], "general_settings": general},
        extra_args=["--log-format", "json"] if how == "flag" else [],
    )
    upstream.enqueue(Error(503))
    status, _, _ = post(
        gw.port,
        "/v1/chat/completions",
        {"model": "a", "messages": [{"role": "user", "content": PROMPT}]},
        {"authorization": f"Bearer {MASTER_KEY}", "x-request-id": "json-1"},
    )
    assert status == 200
    records = _records(gw, 2)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    (line,) = [r for r in records if r.get("request_id") == "json-1"]
    assert line["logger"] == "gatewayd.access" and line["level"] == "info"
    assert line["status"] == 200 and line["alias"] == "a" and line["attempts"] == 2
    assert line["method"] == "POST" and line["path"] == "/v1/chat/completions"
    assert isinstance(line["latency_ms"], float) and line["bytes"] > 0
    assert line["time"].endswith("Z")
    # The retry's warning is an event of its own, also JSON.
    assert any(
        r["logger"] == "gatewayd.routing.router" and "503" in r["message"] and r["level"] == "info"
        for r in records
    )
    text = gw.log()
    for secret in (UPSTREAM_KEY, MASTER_KEY, PROMPT):
        assert secret not in text


def test_text_stays_the_default(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway({"model_list": [openai_entry("a", upstream)]})
    assert post(gw.port, "/v1/chat/completions", {**CHAT, "model": "a"})[0] == 200
    deadline = time.monotonic() + 5
    while "alias=a" not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in gw.log().splitlines() if "alias=a" in x)
    assert not line.lstrip().startswith("{") and "request_id=" in line


def test_bad_log_format_is_refused() -> None:
    code, out = run_gateway_expecting_failure(
        {"model_list": [{"model_name": "m", "params": {"model": "mock/x"}}]},
        extra_args=["--log-format", "xml"],
    )
    assert code != 0 and "--log-format must be text or json" in out
    code, out = run_gateway_expecting_failure(
        {
            "model_list": [{"model_name": "m", "params": {"model": "mock/x"}}],
            "general_settings": {"log_format": "xml"},
        }
    )
    assert code == 2 and "general_settings.log_format" in out


def test_event_as_json_fields_and_failures() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        from twisted.python.failure import Failure

        failure = Failure()
    from twisted.logger import LogLevel

    line = json.loads(
        event_as_json(
            {
                "log_format": "attempt {n} failed: {msg}",
                "log_level": LogLevel.warn,
                "log_namespace": "gatewayd.x",
                "log_time": 0.0,
                "log_failure": failure,
                "n": 2,
                "msg": "upstream said no",
                "_text_only": "x",
                "obj": object(),
            }
        )
    )
    assert line["time"] == "1970-01-01T00:00:00.000Z"
    assert line["level"] == "warn" and line["logger"] == "gatewayd.x"
    assert line["message"] == "attempt 2 failed: upstream said no"
    assert line["n"] == 2 and "_text_only" not in line and "obj" not in line
    assert "ValueError: boom" in line["traceback"]
