"""Active health checks: on a fake clock with a scripted probe (spread in time, bounded
concurrency, down at once, a cooldown ended early), their settings, and end to end: a
killed fake upstream is found with no client request failing."""

from __future__ import annotations

import itertools
import json
import random
import time
import urllib.request
from typing import Any

import pytest
from conftest import GatewayFactory, openai_entry, sdk
from test_e2e_streaming import wait_for
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from gatewayd.config import ConfigError, Deployment, parse_config
from gatewayd.fleet.health_checks import CONCURRENCY, HealthChecker, store_claim, targets
from gatewayd.fleet.probe import auth_headers, listing_url
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.shared_cooldowns import SharedCooldowns
from gatewayd.state.memory import MemoryStore
from gatewayd.testing import Error, FakeUpstream

CONFIG = """
model_list:
  - model_name: fleet
    params: {model: openai/m, api_base: "http://10.0.0.1:8000/v1", api_key: sk-1}
    model_info: {id: a}
  - model_name: fleet
    params: {model: openai/m, api_base: "http://10.0.0.2:8000/v1", api_key: sk-2,
             health_check: {path: /health, interval: 2, timeout: 0.5}}
    model_info: {id: b}
  - model_name: local
    params: {model: ollama/llama3, api_base: "http://10.0.0.3:11434"}
    model_info: {id: c}
  - model_name: demo
    params: {model: mock/m}
general_settings:
  health_check_interval: 10
"""


class ScriptedProbe:
    """Answers each deployment's probes with its scripted status (None: no answer)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.status: dict[str, int | None] = {}
        self.sent: list[tuple[float, str, str]] = []
        self.hold = False
        self.held: list[Deferred[tuple[int, bytes]]] = []

    def __call__(self, d: Deployment, url: str, timeout: float) -> Deferred[tuple[int, bytes]]:
        self.sent.append((self.clock.seconds(), d.id, url))
        if self.hold:
            held: Deferred[tuple[int, bytes]] = Deferred()
            self.held.append(held)
            return held
        status = self.status.get(d.id, 200)
        if status is None:
            return fail(ConnectionRefusedError("refused"))
        return succeed((status, b"{}"))


def checker(text: str = CONFIG) -> tuple[HealthChecker, ScriptedProbe, Cooldowns, Clock]:
    clock = Clock()
    health = Cooldowns(clock)
    probe = ScriptedProbe(clock)
    hc = HealthChecker(health, clock, probe, rng=random.Random(5))
    hc.retarget(targets(parse_config(text, environ={}), listing_url))
    return hc, probe, health, clock


def test_targets_urls_and_intervals() -> None:
    found = {t.deployment.id: t for t in targets(parse_config(CONFIG, environ={}), listing_url)}
    assert set(found) == {"a", "b", "c"}  # not the in-process mock
    assert found["a"].url == "http://10.0.0.1:8000/v1/models" and found["a"].interval == 10
    assert found["b"].url == "http://10.0.0.2:8000/v1/health" and found["b"].interval == 2
    assert found["b"].timeout == 0.5
    assert found["c"].url == "http://10.0.0.3:11434/api/tags"  # Ollama's own listing
    # Without a general interval only the deployment that asks is probed.
    only = targets(
        parse_config(CONFIG.replace("health_check_interval: 10", ""), environ={}), listing_url
    )
    assert [t.deployment.id for t in only] == ["b"]


def test_probes_are_spread_and_repeat() -> None:
    hc, probe, _, clock = checker()
    clock.pump([0.1] * 100)  # 10 s
    first: dict[str, float] = {}
    for at, dep, _ in probe.sent:
        first.setdefault(dep, at)
    assert set(first) == {"a", "b", "c"}
    assert len(set(first.values())) == 3  # not all at the same moment
    b_times = [at for at, dep, _ in probe.sent if dep == "b"]
    assert len(b_times) >= 4  # every ~2 s
    gaps = [y - x for x, y in itertools.pairwise(b_times)]
    assert all(1.7 <= g <= 2.3 for g in gaps), gaps
    hc.stop()
    n = len(probe.sent)
    clock.pump([1.0] * 30)
    assert len(probe.sent) == n


def test_a_failed_probe_marks_down_and_a_good_one_ends_the_cooldown() -> None:
    hc, probe, health, clock = checker()
    probe.status["a"] = None  # connection refused
    clock.pump([0.1] * 110)
    assert health.is_cooling("a")
    assert not health.is_cooling("b") and not health.is_cooling("c")
    assert "health check" in (health.get("a").last_error or "")
    probe.status["a"] = 200  # back: the next probe ends the 30 s cooldown early
    clock.pump([0.1] * 110)
    assert not health.is_cooling("a")
    assert health.get("a").consecutive_fails == 0
    # A 503 is down too; a 404 (a wrong path) is not.
    probe.status["c"] = 404
    probe.status["b"] = 503
    clock.pump([0.1] * 110)
    assert health.is_cooling("b") and not health.is_cooling("c")
    hc.stop()


def test_concurrency_is_bounded() -> None:
    entries = "".join(
        f"  - model_name: big\n    params: {{model: openai/m, api_base: 'http://10.1.0.{i}/v1',"
        f" api_key: k}}\n    model_info: {{id: d{i}}}\n"
        for i in range(40)
    )
    hc, probe, _, clock = checker(
        f"model_list:\n{entries}general_settings:\n  health_check_interval: 1\n"
    )
    probe.hold = True
    clock.pump([0.05] * 40)  # every deployment is due at least once
    assert len(probe.held) == CONCURRENCY
    probe.held[0].callback((200, b"{}"))
    assert len(probe.held) == CONCURRENCY + 1  # one done, one more started
    hc.stop()


@pytest.mark.parametrize(
    ("general", "params", "path", "reason"),
    [
        ("health_check_interval: x", "", "general_settings.health_check_interval", "number"),
        ("background_health_checks: 'yes'", "", "background_health_checks", "true or false"),
        ("", ", health_check: 3", "params.health_check", "mapping"),
        ("", ", health_check: {path: health}", "params.health_check.path", "starting with /"),
        ("", ", health_check: {interval: 0}", "params.health_check.interval", "at least"),
        ("", ", health_check: {every: 3}", "params.health_check.every", "unknown key"),
    ],
)
def test_settings_errors_name_the_key(general: str, params: str, path: str, reason: str) -> None:
    text = (
        "model_list:\n  - model_name: a\n"
        f"    params: {{model: openai/m, api_base: 'http://h/v1', api_key: k{params}}}\n"
        f"general_settings:\n  {general or 'num_retries: 0'}\n"
    )
    with pytest.raises(ConfigError) as e:
        parse_config(text, environ={})
    assert path in str(e.value) and reason in str(e.value)


def test_litellm_background_health_checks() -> None:
    base = "model_list:\n  - model_name: a\n    params: {model: mock/m}\ngeneral_settings:\n"
    on = parse_config(base + "  background_health_checks: true\n", environ={})
    assert on.general.health_check_interval == 300.0
    both = base + "  background_health_checks: true\n  health_check_interval: 15\n"
    assert parse_config(both, environ={}).general.health_check_interval == 15.0
    off = base + "  background_health_checks: false\n  health_check_interval: 15\n"
    assert parse_config(off, environ={}).general.health_check_interval == 0.0
    assert not any("health" in w for w in on.warnings)


def test_probe_headers_carry_the_deployment_credentials() -> None:
    cfg = parse_config(CONFIG, environ={})
    h = auth_headers(cfg.deployments[0])
    assert h.getRawHeaders(b"authorization") == [b"Bearer sk-1"]


def _health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def test_a_killed_upstream_is_found_with_no_client_request_failing(
    gateway: GatewayFactory,
) -> None:
    with FakeUpstream(content="from a") as a, FakeUpstream(content="from b") as b:
        config = {
            "model_list": [openai_entry("fleet", a, "m"), openai_entry("fleet", b, "m")],
            "general_settings": {"health_check_interval": 0.3},
        }
        gw = gateway(config)
        assert wait_for(lambda: a.count("/models") >= 1 and b.count("/models") >= 1, 10.0)
        a.close()  # killed
        dead = f"openai/m@{a.host}:{a.port}"

        def found() -> bool:
            deps = _health(gw.url)["models"]["fleet"]["deployments"]
            return any(d["id"] == dead and d["state"] == "cooldown" for d in deps)

        assert wait_for(found, 10.0)
        client = sdk(gw.base_url)
        start = time.monotonic()
        for _ in range(10):
            raw = client.chat.completions.with_raw_response.create(
                model="fleet", messages=[{"role": "user", "content": "Hi"}]
            )
            assert raw.headers["x-gatewayd-attempts"] == "1"
            assert raw.parse().choices[0].message.content == "from b"
        assert time.monotonic() - start < 10.0
        assert "is down" in gw.log()


def test_with_a_state_store_one_instance_probes_and_all_know() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    config = parse_config(
        CONFIG.replace("health_check_interval: 10", "health_check_interval: 2"), environ={}
    )
    found = targets(config, listing_url)
    instances: list[tuple[Cooldowns, ScriptedProbe, HealthChecker, SharedCooldowns]] = []
    for name in ("one", "two"):
        health = Cooldowns(clock)
        shared = SharedCooldowns(store, health, clock, lambda: {"a", "b", "c"})
        probe = ScriptedProbe(clock)
        hc = HealthChecker(
            health,
            clock,
            probe,
            on_cooldown=shared.publish,
            rng=random.Random(len(instances)),
            claim=store_claim(store, name),
            on_recovered=shared.withdraw,
        )
        hc.retarget(found)
        shared.start()
        instances.append((health, probe, hc, shared))
    clock.pump([0.1] * 50)
    for dep in ("a", "b", "c"):  # each deployment probed by one instance only
        probers = {i for i, inst in enumerate(instances) if any(p[1] == dep for p in inst[1].sent)}
        assert len(probers) == 1, (dep, probers)
    prober = next(i for i, inst in enumerate(instances) if any(p[1] == "a" for p in inst[1].sent))
    other = 1 - prober
    instances[prober][1].status["a"] = None  # down
    clock.pump([0.1] * 40)
    assert all(inst[0].is_cooling("a") for inst in instances)  # both know
    assert "another gateway instance" in (instances[other][0].get("a").last_error or "")
    instances[prober][1].status["a"] = 200  # back, long before the 30 s cooldown ends
    clock.pump([0.1] * 40)
    assert not any(inst[0].is_cooling("a") for inst in instances)  # both know
    assert not any(p[1] == "a" for p in instances[other][1].sent)
    for _, _, hc, shared in instances:
        hc.stop()
        shared.stop()


def test_a_completion_probe_where_asked(gateway: GatewayFactory) -> None:
    with FakeUpstream(content="pong") as up:
        config = {
            "model_list": [
                openai_entry("fleet", up, "m", health_check={"completion": True, "interval": 0.3}),
            ],
        }
        gw = gateway(config)
        assert wait_for(lambda: up.count("/chat/completions") >= 1, 10.0)
        sent = up.requests[0].json()
        assert sent["max_tokens"] == 1 and sent["model"] == "m"
        assert up.count("/models") == 0  # no listing probe for it
        up.set_default(Error(503))
        dep = f"openai/m@{up.host}:{up.port}"

        def down() -> bool:
            deps = _health(gw.url)["models"]["fleet"]["deployments"]
            return any(d["id"] == dep and d["state"] == "cooldown" for d in deps)

        assert wait_for(down, 10.0)
