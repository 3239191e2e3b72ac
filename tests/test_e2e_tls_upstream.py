"""TLS to upstreams end to end: ``ssl_verify`` (true, false, a CA bundle) and mutual TLS
with ``ssl_certfile``/``ssl_keyfile``, against a real HTTPS FakeUpstream on 127.0.0.1
with a CA and certificates made for the test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import UPSTREAM_KEY, GatewayFactory
from test_e2e_api import CHAT, post

from gatewayd.config import ConfigError, parse_config
from gatewayd.config.tls import TLSSettings
from gatewayd.testing import FakeUpstream
from gatewayd.testing.tlsfiles import TLSFiles, make_tls_files
from gatewayd.upstream.http import UpstreamAgents


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_upstream(tls: TLSFiles) -> Iterator[FakeUpstream]:
    with FakeUpstream(tls=tls.server_context()) as server:
        yield server


@pytest.fixture
def mtls_upstream(tls: TLSFiles) -> Iterator[FakeUpstream]:
    with FakeUpstream(tls=tls.server_context(require_client_cert=True)) as server:
        yield server


def config(server: FakeUpstream, **params: Any) -> dict[str, Any]:
    p = {"model": "openai/up-model", "api_base": server.url, "api_key": UPSTREAM_KEY, **params}
    return {"model_list": [{"model_name": "m", "params": p}]}


def chat(port: int) -> tuple[int, Any]:
    status, _, body = post(port, "/v1/chat/completions", {**CHAT, "model": "m"})
    return status, body


def test_verification_is_on_by_default_and_an_untrusted_certificate_is_a_clear_502(
    gateway: GatewayFactory, https_upstream: FakeUpstream
) -> None:
    gw = gateway(config(https_upstream))
    status, body = chat(gw.port)
    assert status == 502
    message = body["error"]["message"]
    assert "certificate verify failed" in message and "ssl_verify" in message, message
    assert https_upstream.requests == []  # nothing was sent over the unverified connection


def test_ssl_verify_with_a_ca_bundle_path_succeeds(
    gateway: GatewayFactory, https_upstream: FakeUpstream, tls: TLSFiles
) -> None:
    gw = gateway(config(https_upstream, ssl_verify=str(tls.ca)))
    status, body = chat(gw.port)
    assert status == 200, body
    assert https_upstream.last_request.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_ssl_verify_false_succeeds_with_an_untrusted_certificate(
    gateway: GatewayFactory, https_upstream: FakeUpstream
) -> None:
    gw = gateway(config(https_upstream, ssl_verify=False))
    status, body = chat(gw.port)
    assert status == 200, body


def test_mutual_tls_needs_the_client_certificate(
    gateway: GatewayFactory, mtls_upstream: FakeUpstream, tls: TLSFiles
) -> None:
    doc = config(mtls_upstream, ssl_verify=str(tls.ca))
    doc["model_list"].append(
        {
            "model_name": "with-cert",
            "params": {
                **doc["model_list"][0]["params"],
                "ssl_certfile": str(tls.client_cert),
                "ssl_keyfile": str(tls.client_key),
            },
        }
    )
    gw = gateway(doc)
    status, body = chat(gw.port)  # same origin, no client certificate: refused
    assert status == 502, body
    status, _, body = post(gw.port, "/v1/chat/completions", {**CHAT, "model": "with-cert"})
    assert status == 200, body
    assert len(mtls_upstream.requests) == 1


def test_pools_are_kept_apart_by_tls_settings() -> None:
    agents = UpstreamAgents(reactor=None)
    url = "https://api.example.test/v1"
    plain = agents.agent_for(url)
    assert agents.agent_for(url) is plain
    assert agents.agent_for(url, TLSSettings(verify=False)) is not plain
    assert agents.agent_for(url, TLSSettings(True, "/c.pem", "/k.pem")) is not plain


def _load(params: dict[str, Any]) -> Any:
    p = {"model": "openai/m", "api_base": "https://h.test/v1", **params}
    doc = {"model_list": [{"model_name": "a", "params": p}]}
    (d,) = parse_config(json.dumps(doc), environ={}).deployments
    return d


def test_tls_keys_are_read_and_checked_at_load(tls: TLSFiles, tmp_path: Path) -> None:
    d = _load({})
    assert (d.ssl_verify, d.ssl_certfile, d.ssl_keyfile) == (True, None, None)
    assert _load({"ssl_verify": False}).ssl_verify is False
    assert _load({"ssl_verify": "false"}).ssl_verify is False
    assert _load({"ssl_verify": str(tls.ca)}).ssl_verify == str(tls.ca)
    d = _load({"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.client_key)})
    assert d.ssl_certfile == str(tls.client_cert)
    cases = [
        ({"ssl_verify": str(tmp_path / "missing.pem")}, "ssl_verify", "cannot read"),
        ({"ssl_certfile": str(tmp_path / "missing.pem")}, "ssl_certfile", "cannot read"),
        ({"ssl_keyfile": str(tls.client_key)}, "ssl_keyfile", "needs ssl_certfile"),
        ({"ssl_verify": str(tls.client_key)}, "ssl_verify", "cannot load"),
        (
            {"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.server_key)},
            "ssl_certfile",
            "cannot load",
        ),
    ]
    for params, key, reason in cases:
        with pytest.raises(ConfigError) as info:
            _load(params)
        assert info.value.path == f"model_list[0].params.{key}", info.value
        assert reason in info.value.reason
