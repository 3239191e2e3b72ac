"""keys: and the state store settings, parsed and validated; authentication by key."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from gatewayd.config import ConfigError, parse_config
from gatewayd.config.keys import parse_period
from gatewayd.web.auth import MASTER, authenticate

MODELS = [
    {"model_name": "a", "params": {"model": "mock/a"}},
    {"model_name": "b", "params": {"model": "mock/b"}},
]


def cfg(env: dict[str, str] | None = None, **top: Any) -> Any:
    return parse_config(json.dumps({"model_list": MODELS, **top}), environ=env or {})


def test_keys_parse_into_frozen_objects() -> None:
    c = cfg(
        {"TEAM_B_KEY": "sk-b"},
        keys=[
            {
                "key": "sk-a",
                "name": "team-a",
                "models": ["a"],
                "rpm": 30,
                "tpm": "1000",
                "max_parallel_requests": 2,
                "budget": {"usd": 5, "tokens": 100000, "period": "30d"},
                "metadata": {"owner": "alice"},
            },
            {"key": "os.environ/TEAM_B_KEY", "name": "team-b"},
            {"key_sha256": hashlib.sha256(b"sk-c").hexdigest(), "name": "team-c"},
        ],
    )
    a, b, k3 = c.keys.keys
    assert (a.name, a.models, a.rpm, a.tpm, a.max_parallel_requests) == (
        "team-a",
        ("a",),
        30,
        1000,
        2,
    )
    assert a.budget is not None and (a.budget.usd, a.budget.tokens, a.budget.period) == (
        5.0,
        100000,
        30 * 86400,
    )
    assert a.metadata["owner"] == "alice"
    assert b.models is None and b.allows("b")
    assert c.keys.lookup(b"sk-b") is b and c.keys.lookup(b"sk-c") is k3
    assert c.keys.lookup(b"sk-x") is None
    assert "sk-a" not in repr(c) and "sk-b" not in repr(c)
    with pytest.raises(AttributeError):
        a.rpm = 1


@pytest.mark.parametrize(
    ("entry", "path", "reason"),
    [
        ({"key": "k"}, "keys[0].name", "is required"),
        ({"name": "n"}, "keys[0]", "exactly one of key and key_sha256"),
        ({"name": "a\nb", "key": "k"}, "keys[0].name", "control characters"),
        ({"name": "n", "key": "k", "key_sha256": "0" * 64}, "keys[0]", "exactly one"),
        ({"name": "n", "key_sha256": "abc"}, "keys[0].key_sha256", "64 hex digits"),
        ({"name": "n", "key": "k", "models": ["nope"]}, "keys[0].models", "'nope' is not"),
        ({"name": "n", "key": "k", "rpm": 0}, "keys[0].rpm", "at least 1"),
        (
            {"name": "n", "key": "k", "budget": {"period": "1d"}},
            "keys[0].budget",
            "tokens and/or usd",
        ),
        (
            {"name": "n", "key": "k", "budget": {"usd": 1, "period": "soon"}},
            "keys[0].budget.period",
            "not a period",
        ),
        ({"name": "n", "key": "os.environ/UNSET"}, "keys[0].key", "UNSET is not set"),
    ],
)
def test_bad_keys_name_the_path(entry: dict[str, Any], path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        cfg(keys=[entry])
    assert e.value.path == path and reason in e.value.reason


def test_duplicate_names_and_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"keys\[1\].name"):
        cfg(keys=[{"key": "k1", "name": "n"}, {"key": "k2", "name": "n"}])
    with pytest.raises(ConfigError, match="listed twice") as e:
        cfg(keys=[{"key": "k1", "name": "n"}, {"key": "k1", "name": "m"}])
    assert "k1" not in str(e.value)
    with pytest.raises(ConfigError, match="expected a list"):
        cfg(keys={"key": "k"})


def test_periods() -> None:
    assert [parse_period(p) for p in ("30s", "15m", "1h", "1d", "30d", "1w")] == [
        30,
        900,
        3600,
        86400,
        30 * 86400,
        7 * 86400,
    ]


def test_state_store_settings() -> None:
    assert cfg().general.state_store is None
    assert cfg().general.state_store_failure == "open"
    g = cfg(
        general_settings={"state_store": "redis://:pw@h:1/2", "state_store_failure": "closed"}
    ).general
    assert (g.state_store, g.state_store_failure) == ("redis://:pw@h:1/2", "closed")
    assert "pw" not in repr(g)
    g = cfg(
        {"RP": "s3cret"},
        router_settings={
            "redis_host": "r",
            "redis_port": "6380",
            "redis_password": "os.environ/RP",
        },
    ).general
    assert g.state_store == "redis://:s3cret@r:6380/0"
    assert cfg({"REDIS_URL": "redis://env:7/0"}).general.state_store == "redis://env:7/0"
    # LiteLLM's redis_password alone (no host) is not read: an unset variable is no error.
    assert cfg(router_settings={"redis_password": "os.environ/UNSET"}).general.state_store is None


@pytest.mark.parametrize(
    ("general", "path"),
    [
        ({"state_store": "http://:pw@h"}, "general_settings.state_store"),
        ({"state_store": "redis://:pw@h:port"}, "general_settings.state_store"),
        ({"state_store_failure": "maybe"}, "general_settings.state_store_failure"),
    ],
)
def test_bad_state_store_settings(general: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as e:
        cfg(general_settings=general)
    assert e.value.path == path and "pw" not in str(e.value)


def _request(key: str | None) -> Request:
    r = Request(DummyChannel())
    if key is not None:
        r.requestHeaders.addRawHeader(b"authorization", b"Bearer " + key.encode())
    return r


def test_authenticate() -> None:
    open_ = cfg()
    assert authenticate(_request(None), open_) is MASTER
    keyed = cfg(keys=[{"key": "sk-a", "name": "team-a", "models": ["a"]}])
    assert authenticate(_request(None), keyed) is None  # keys alone: a key is needed
    caller = authenticate(_request("sk-a"), keyed)
    assert caller is not None and caller.name == "team-a"
    assert caller.allows("a") and not caller.allows("b")
    both = cfg(general_settings={"master_key": "sk-master"}, keys=[{"key": "sk-a", "name": "x"}])
    assert authenticate(_request("sk-master"), both) is MASTER
    assert MASTER.allows("b") and MASTER.name is None
    assert authenticate(_request("sk-wrong"), both) is None


def test_usage_log_settings() -> None:
    g = cfg(general_settings={"usage_log": "/tmp/u.jsonl", "usage_log_max_bytes": "1000"}).general
    assert (g.usage_log, g.usage_log_max_bytes, g.usage_log_backups) == ("/tmp/u.jsonl", 1000, 5)
    assert cfg().general.usage_log is None
    with pytest.raises(ConfigError) as e:
        cfg(general_settings={"usage_log_max_bytes": 0})
    assert e.value.path == "general_settings.usage_log_max_bytes"
