"""Client keys, limits and budgets end to end: the real daemon (memory state store)
driven by the official openai SDK and raw HTTP."""

from __future__ import annotations

import hashlib
import http.client
import json
import signal
import time
from typing import Any

import openai
import pytest
from conftest import MASTER_KEY, GatewayFactory, openai_entry, sdk
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from gatewayd.testing import Error, FakeUpstream, Reply

KEY_A = "sk-team-a-SECRET-1111"
KEY_B = "sk-team-b-SECRET-2222"
MSG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


def get(port: int, path: str, key: str | None) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(body)


def config(upstream: FakeUpstream, keys: list[dict[str, Any]], **general: Any) -> dict[str, Any]:
    return {
        "model_list": [
            openai_entry("fast", upstream, input_cost_per_token=0.001, output_cost_per_token=0.002),
            openai_entry("smart", upstream),
        ],
        "general_settings": {"master_key": MASTER_KEY, **general},
        "keys": keys,
    }


def test_unknown_key_401_alias_not_allowed_403_and_models_per_key(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(
        config(
            upstream,
            [
                {"key": KEY_A, "name": "team-a", "models": ["fast"]},
                {"key_sha256": hashlib.sha256(KEY_B.encode()).hexdigest(), "name": "team-b"},
            ],
        )
    )
    with pytest.raises(openai.AuthenticationError) as e401:
        sdk(gw.base_url, "sk-unknown").chat.completions.create(model="fast", messages=MSG)
    assert e401.value.status_code == 401
    assert e401.value.body["type"] == "authentication_error"  # type: ignore[index]
    a = sdk(gw.base_url, KEY_A)
    with pytest.raises(openai.PermissionDeniedError) as e403:
        a.chat.completions.create(model="smart", messages=MSG)
    assert e403.value.body["type"] == "permission_error"  # type: ignore[index]
    assert [m.id for m in a.models.list()] == ["fast"]
    with pytest.raises(openai.NotFoundError):  # as if it did not exist
        a.models.retrieve("smart")
    assert a.chat.completions.create(model="fast", messages=MSG).choices
    b = sdk(gw.base_url, KEY_B)  # key_sha256: the file held no secret
    assert {m.id for m in b.models.list()} == {"fast", "smart"}
    assert b.chat.completions.create(model="smart", messages=MSG).choices
    master = sdk(gw.base_url, MASTER_KEY)
    assert {m.id for m in master.models.list()} == {"fast", "smart"}
    # Logs show the key's name, never the key.
    log = gw.log()
    assert "key=team-a" in log and KEY_A not in log and KEY_B not in log


def test_key_rpm_429_with_retry_after_and_ratelimit_headers(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(config(upstream, [{"key": KEY_A, "name": "team-a", "rpm": 3, "tpm": 100000}]))
    a = sdk(gw.base_url, KEY_A)
    for i in range(3):
        raw = a.chat.completions.with_raw_response.create(model="fast", messages=MSG)
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
        assert raw.headers["x-gatewayd-key"] == "team-a"
    with pytest.raises(openai.RateLimitError) as e:
        a.chat.completions.create(model="fast", messages=MSG)
    err = e.value
    assert err.status_code == 429
    assert err.body["type"] == "rate_limit_error"  # type: ignore[index]
    assert err.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    retry_after = int(err.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.response.headers["x-ratelimit-limit-requests"] == "3"
    assert err.response.headers["x-gatewayd-key"] == "team-a"
    assert upstream.count() == 3  # the refused request never went upstream
    # The master key is not limited by team-a's limits.
    assert sdk(gw.base_url, MASTER_KEY).chat.completions.create(model="fast", messages=MSG)


def test_budget_exceeded_and_key_info(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(
        config(
            upstream,
            [
                {
                    "key": KEY_A,
                    "name": "team-a",
                    "budget": {"usd": 0.02, "period": "1d"},
                    "metadata": {"team": "A"},
                }
            ],
        )
    )
    a = sdk(gw.base_url, KEY_A)
    spent = 0.0
    for _ in range(20):
        try:
            r = a.chat.completions.create(model="fast", messages=MSG, max_tokens=5)
        except openai.RateLimitError as e:
            assert e.body["code"] == "budget_exceeded"  # type: ignore[index]
            assert e.body["type"] == "rate_limit_error"  # type: ignore[index]
            assert int(e.response.headers["retry-after"]) > 3600
            break
        assert r.usage is not None
        spent += r.usage.prompt_tokens * 0.001 + r.usage.completion_tokens * 0.002
    else:
        pytest.fail("the budget was never enforced")
    assert 0.02 <= spent < 0.04
    status, _, info = get(gw.port, "/key/info", KEY_A)
    assert status == 200 and info["key_name"] == "team-a"
    i = info["info"]
    assert i["spend"]["usd"] == pytest.approx(spent)
    assert i["budget"]["usd"] == 0.02 and i["budget"]["remaining_usd"] == 0
    assert i["metadata"] == {"team": "A"}
    assert KEY_A not in json.dumps(info)
    assert get(gw.port, "/key/info", "sk-nope")[0] == 401
    assert get(gw.port, "/key/info", MASTER_KEY)[2]["info"]["master_key"] is True
    metrics = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    spend_lines = [
        line for line in text.splitlines() if line.startswith("gatewayd_spend_usd_total{")
    ]
    assert any('key="team-a"' in line and 'alias="fast"' in line for line in spend_lines)
    assert float(spend_lines[0].rsplit(" ", 1)[1]) == pytest.approx(spent)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    prompt = (("alias", "fast"), ("key", "team-a"), ("kind", "prompt"))
    assert samples[("gatewayd_key_tokens_total", prompt)] > 0
    assert KEY_A not in text


def test_deployment_at_its_rpm_is_skipped_then_fallback_then_429(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [
                openai_entry("fast", upstream, rpm=1),
                openai_entry("fast", upstream2, rpm=1),
                openai_entry("spare", upstream2, model="spare-model", rpm=1),
                openai_entry("lonely", upstream, model="lonely-model", rpm=1),
            ],
            "general_settings": {"fallbacks": [{"fast": ["spare"]}]},
        }
    )
    c = sdk(gw.base_url)
    answered = []
    for _ in range(3):
        raw = c.chat.completions.with_raw_response.create(model="fast", messages=MSG)
        answered.append(raw.headers.get("x-gatewayd-fallback"))
    assert answered == [None, None, "spare"]  # each deployment once, then the fallback
    assert upstream.count() == 1 and upstream2.count() == 2
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="fast", messages=MSG)
    assert e.value.body["type"] == "rate_limit_error"  # type: ignore[index]
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 60
    assert e.value.response.headers["x-ratelimit-limit-requests"] == "1"
    assert upstream.count() + upstream2.count() == 3


def test_stream_usage_settles_the_tokens(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream, [{"key": KEY_A, "name": "team-a", "tpm": 50000}]))
    a = sdk(gw.base_url, KEY_A)
    usage = None
    for chunk in a.chat.completions.create(
        model="fast",
        messages=MSG,
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=4000,
    ):
        usage = chunk.usage or usage
    assert usage is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        tpm = get(gw.port, "/key/info", KEY_A)[2]["info"]["tpm"]
        if tpm["remaining"] == 50000 - usage.total_tokens:
            break  # the 4000+ reserved were settled to the real usage
        time.sleep(0.05)
    assert tpm["remaining"] == 50000 - usage.total_tokens


def test_usage_survives_a_reload(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    cfg = config(upstream, [{"key": KEY_A, "name": "team-a", "rpm": 3}])
    gw = gateway(cfg)
    a = sdk(gw.base_url, KEY_A)
    for _ in range(2):
        a.chat.completions.create(model="fast", messages=MSG)
    cfg["keys"].append({"key": KEY_B, "name": "team-b"})
    gw.write_config(cfg)
    gw.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while get(gw.port, "/v1/models", KEY_B)[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert get(gw.port, "/v1/models", KEY_B)[0] == 200
    a.chat.completions.create(model="fast", messages=MSG)
    with pytest.raises(openai.RateLimitError):
        a.chat.completions.create(model="fast", messages=MSG)


def test_parallel_limit_per_key(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(config(upstream, [{"key": KEY_A, "name": "team-a", "max_parallel_requests": 1}]))
    upstream.enqueue(Reply(delay=1.5))
    import threading

    first: list[Any] = []
    t = threading.Thread(
        target=lambda: first.append(
            sdk(gw.base_url, KEY_A).chat.completions.create(model="fast", messages=MSG)
        )
    )
    t.start()
    upstream.wait_for_requests(1)
    with pytest.raises(openai.RateLimitError):
        sdk(gw.base_url, KEY_A).chat.completions.create(model="fast", messages=MSG)
    t.join(10)
    assert first and first[0].choices
    assert sdk(gw.base_url, KEY_A).chat.completions.create(model="fast", messages=MSG).choices


def test_failed_upstream_request_refunds_tokens(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(config(upstream, [{"key": KEY_A, "name": "team-a", "tpm": 10000}]))
    upstream.enqueue(Error(400, "bad request"))
    with pytest.raises(openai.BadRequestError):
        sdk(gw.base_url, KEY_A).chat.completions.create(model="fast", messages=MSG, max_tokens=3000)
    assert get(gw.port, "/key/info", KEY_A)[2]["info"]["tpm"]["remaining"] == 10000


def test_usage_log_lines_rotated_by_size(
    gateway: GatewayFactory, upstream: FakeUpstream, tmp_path: Any
) -> None:
    path = tmp_path / "usage.jsonl"
    gw = gateway(
        config(
            upstream,
            [{"key": KEY_A, "name": "team-a", "rpm": 4}],
            usage_log=str(path),
            usage_log_max_bytes=700,
            usage_log_backups=3,
        )
    )
    a = sdk(gw.base_url, KEY_A)
    for _ in range(4):
        a.chat.completions.create(model="fast", messages=MSG)
    with pytest.raises(openai.RateLimitError):
        a.chat.completions.create(model="fast", messages=MSG)
    files = sorted(tmp_path.glob("usage.jsonl*"))
    assert len(files) >= 2  # rotated by size
    lines = [json.loads(x) for f in reversed(files) for x in f.read_text().splitlines()]
    assert len(lines) == 5
    ok = lines[0]
    assert (ok["key"], ok["alias"], ok["status"], ok["stream"]) == ("team-a", "fast", 200, False)
    assert ok["prompt_tokens"] > 0 and ok["completion_tokens"] > 0
    assert ok["cost_usd"] == pytest.approx(
        ok["prompt_tokens"] * 0.001 + ok["completion_tokens"] * 0.002
    )
    assert ok["deployment"].startswith("openai/up-model@") and ok["latency_ms"] >= 0
    assert lines[-1]["status"] == 429 and lines[-1]["total_tokens"] == 0
    text = "".join(f.read_text() for f in files)
    assert "hello there" not in text and KEY_A not in text
