"""general_settings.cache (and LiteLLM's litellm_settings.cache + cache_params) parsed
once, every mistake named by its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from gatewayd.config.model import GatewayConfig

MODELS = [{"model_name": "a", "params": {"model": "openai/m", "api_base": "http://127.0.0.1:1"}}]


def load(tmp_path: Path, **sections: Any) -> GatewayConfig:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_list": MODELS, **sections}))
    return load_config(str(path))


def test_general_settings_cache(tmp_path: Path) -> None:
    raw = {
        "type": "memory",
        "ttl": 60,
        "max_bytes": 1000,
        "endpoints": ["/v1/chat/completions", "embeddings"],
        "scope": "shared",
        "coalesce_only": True,
    }
    c = load(tmp_path, general_settings={"cache": raw}).general.cache
    assert c is not None and c.type == "memory" and c.ttl == 60 and c.max_bytes == 1000
    assert c.endpoints == frozenset({"chat/completions", "embeddings"})
    assert c.scope == "shared" and c.coalesce_only and c.coalesce
    assert load(tmp_path).general.cache is None


def test_litellm_spelling_is_read_not_warned_about(tmp_path: Path) -> None:
    params = {"type": "redis", "host": "127.0.0.1", "port": 6390, "ttl": 30}
    params["supported_call_types"] = ["acompletion", "aembedding"]
    cfg = load(tmp_path, litellm_settings={"cache": True, "cache_params": params})
    c = cfg.general.cache
    assert c is not None and c.type == "redis" and c.ttl == 30
    assert c.url == "redis://127.0.0.1:6390/0"
    assert c.endpoints == frozenset({"chat/completions", "embeddings"})
    assert not [w for w in cfg.warnings if "cache" in w]
    local = load(tmp_path, litellm_settings={"cache": True, "cache_params": {"type": "local"}})
    assert local.general.cache is not None and local.general.cache.type == "memory"
    assert load(tmp_path, litellm_settings={"cache": False}).general.cache is None


def test_redis_without_url_uses_the_state_store(tmp_path: Path) -> None:
    g = {"cache": {"type": "redis"}, "state_store": "redis://127.0.0.1:6391/0"}
    c = load(tmp_path, general_settings=g).general.cache
    assert c is not None and c.url is None


@pytest.mark.parametrize(
    ("cache", "where", "why"),
    [
        ({"type": "s3"}, "general_settings.cache.type", "memory or redis"),
        ({"type": "redis"}, "general_settings.cache.type", "state_store"),
        ({"type": "redis", "url": "http://x"}, "general_settings.cache.url", "redis://"),
        ({"ttl": -1}, "general_settings.cache.ttl", ""),
        ({"max_bytes": 0}, "general_settings.cache.max_bytes", ""),
        ({"scope": "team"}, "general_settings.cache.scope", "key or shared"),
        ({"endpoints": ["images"]}, "general_settings.cache.endpoints[0]", "unknown endpoint"),
        ({"endpoints": "chat"}, "general_settings.cache.endpoints", "a list"),
        ({"coalesce_only": "maybe"}, "general_settings.cache.coalesce_only", ""),
        ("yes", "general_settings.cache", "mapping"),
    ],
)
def test_bad_cache_settings_name_the_key(tmp_path: Path, cache: Any, where: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, general_settings={"cache": cache})
    assert where in str(e.value) and why in str(e.value)
