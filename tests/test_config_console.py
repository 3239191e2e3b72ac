"""``general_settings.request_log``, ``general_settings.ui`` and a key's ``admin``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from gatewayd.config.model import GatewayConfig
from gatewayd.config.request_log import RequestLogSettings

MODELS = [{"model_name": "a", "params": {"model": "openai/m", "api_base": "http://127.0.0.1:1"}}]


def load(tmp_path: Path, **sections: Any) -> GatewayConfig:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_list": MODELS, **sections}))
    return load_config(str(path))


def test_defaults_memory_log_and_ui_with_a_master_key(tmp_path: Path) -> None:
    c = load(tmp_path)
    assert c.general.request_log == RequestLogSettings()
    assert c.general.request_log.path is None and not c.general.request_log.store_bodies
    assert c.general.ui is False
    assert load(tmp_path, general_settings={"master_key": "sk-m"}).general.ui is True
    off = load(tmp_path, general_settings={"master_key": "sk-m", "ui": False})
    assert off.general.ui is False
    assert (
        load(tmp_path, general_settings={"request_log": False}).general.request_log.enabled is False
    )


def test_request_log_settings(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        general_settings={
            "request_log": {
                "path": "/var/lib/gatewayd/r.db",
                "retention_days": 2.5,
                "max_rows": 1000,
                "store_bodies": True,
            }
        },
    )
    s = c.general.request_log
    assert (s.path, s.retention_days, s.max_rows, s.store_bodies) == (
        "/var/lib/gatewayd/r.db",
        2.5,
        1000,
        True,
    )


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"retention_days": -1}, "general_settings.request_log.retention_days"),
        ({"max_rows": -5}, "general_settings.request_log.max_rows"),
        ({"store_bodies": "perhaps"}, "general_settings.request_log.store_bodies"),
        ({"path": " "}, "general_settings.request_log.path"),
        ("db.sqlite", "general_settings.request_log"),
    ],
)
def test_bad_request_log_names_the_key(tmp_path: Path, value: Any, where: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, general_settings={"request_log": value})
    assert where in str(e.value)


def test_bad_ui_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, general_settings={"ui": "sometimes"})
    assert "general_settings.ui" in str(e.value)


def test_admin_keys(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        keys=[{"name": "ops", "key": "sk-ops", "admin": True}, {"name": "u", "key": "sk-u"}],
    )
    assert [(k.name, k.admin) for k in c.keys.keys] == [("ops", True), ("u", False)]
    with pytest.raises(ConfigError) as e:
        load(tmp_path, keys=[{"name": "ops", "key": "sk-ops", "admin": "root"}])
    assert "admin" in str(e.value)
