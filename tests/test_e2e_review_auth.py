"""Review: an unknown path answers 401 to whoever the gateway would refuse, and 404 to
whoever it would serve, whichever keys are configured (issue 7: "answer 401 before
revealing which paths exist"; behaviour.md: with ``keys:`` every request needs a key).
``/metrics`` with ``require_auth_for_metrics_endpoint`` and ``keys:`` alone needs a key.
"""

from __future__ import annotations

import http.client
from typing import Any

from conftest import MASTER_KEY, GatewayFactory, openai_entry

from gatewayd.testing import FakeUpstream

CLIENT_KEY = "sk-client-SECRET-3131"


def status(port: int, path: str, key: str | None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={} if key is None else {"Authorization": f"Bearer {key}"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def config(upstream: FakeUpstream, **general: Any) -> dict[str, Any]:
    return {
        "model_list": [openai_entry("fast", upstream)],
        "general_settings": general,
        "keys": [{"name": "client", "key": CLIENT_KEY}],
    }


def test_with_keys_only_a_wrong_key_on_an_unknown_path_is_401(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(config(upstream))
    assert status(gw.port, "/v1/models", "sk-wrong") == 401  # the API itself refuses it
    assert [status(gw.port, p, k) for p in ("/nope", "/v1") for k in (None, "sk-wrong")] == [
        401
    ] * 4
    assert status(gw.port, "/nope", CLIENT_KEY) == 404


def test_with_a_master_key_a_client_key_on_an_unknown_path_is_404(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway(config(upstream, master_key=MASTER_KEY))
    assert status(gw.port, "/nope", MASTER_KEY) == 404
    assert status(gw.port, "/nope", "sk-wrong") == 401
    assert status(gw.port, "/nope", CLIENT_KEY) == 404


def test_a_429_says_too_many_requests(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("fast", upstream)],
            "keys": [{"name": "client", "key": CLIENT_KEY, "rpm": 1}],
        }
    )
    reasons = []
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        body = '{"model": "fast", "messages": [{"role": "user", "content": "hi"}]}'
        conn.request(
            "POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {CLIENT_KEY}"}
        )
        resp = conn.getresponse()
        resp.read()
        conn.close()
        reasons.append((resp.status, resp.reason))
    assert reasons == [(200, "OK"), (429, "Too Many Requests")]


def test_metrics_that_require_auth_are_not_open_with_keys_only(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    # With keys: and no master key, is_authorized(request, None) is True: open to anyone.
    gw = gateway(config(upstream, require_auth_for_metrics_endpoint=True))
    assert status(gw.port, "/metrics", None) == 401
    assert status(gw.port, "/metrics", "sk-wrong") == 401
    assert status(gw.port, "/metrics", CLIENT_KEY) == 200
