"""A reload of a big config: shared work done once, and the same checks as before."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import ConfigError, parse_config
from gatewayd.config import deployments as deployments_module
from gatewayd.providers.endpoints import tls_creator
from gatewayd.testing.tlsfiles import TLSFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _doc(params: list[dict[str, Any]]) -> str:
    entries = [
        {
            "model_name": f"a{i}",
            "params": {"model": "openai/m", "api_base": "https://h.test/v1", **p},
        }
        for i, p in enumerate(params)
    ]
    return json.dumps({"model_list": entries})


def test_tls_settings_shared_by_deployments_are_loaded_once(
    tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Any] = []

    def counting(settings: Any, host: bytes) -> Any:
        loads.append(settings)
        return tls_creator(settings, host)

    monkeypatch.setattr(deployments_module, "tls_creator", counting)
    mtls = {"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.client_key)}
    config = parse_config(_doc([{}] * 50 + [mtls] * 50), environ={})
    assert len(config.deployments) == 100
    # Once for the default trust, once for the client certificate (its trust is the same).
    assert len(loads) == 2
    assert {(d.ssl_certfile, d.ssl_keyfile) for d in config.deployments} == {
        (None, None),
        (mtls["ssl_certfile"], mtls["ssl_keyfile"]),
    }


def test_a_bad_tls_file_after_good_ones_is_still_refused_by_its_path(
    tls: TLSFiles, tmp_path: Path
) -> None:
    good = {"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.client_key)}
    wrong_key = {"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.server_key)}
    with pytest.raises(ConfigError) as info:
        parse_config(_doc([{}, good, good, wrong_key]), environ={})
    assert info.value.path == "model_list[3].params.ssl_certfile"
    assert "cannot load" in info.value.reason
    # A file that vanished is noticed for each deployment, loaded or not before.
    gone = tmp_path / "gone.pem"
    gone.write_bytes(Path(tls.ca).read_bytes())
    bundle = {"ssl_verify": str(gone)}
    parse_config(_doc([bundle]), environ={})
    gone.unlink()
    with pytest.raises(ConfigError) as info:
        parse_config(_doc([{}, bundle]), environ={})
    assert info.value.path == "model_list[1].params.ssl_verify"
    assert "cannot read" in info.value.reason
