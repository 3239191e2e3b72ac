"""GET /health written from per-table text is what json.dumps writes for the document;
it follows health changes and reloads. In memory: the service's site on a memory reactor."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from gatewayd.config import parse_config
from gatewayd.limits import store_health
from gatewayd.routing import build_table
from gatewayd.service import GatewayService

CONFIG = """
model_list:
  - model_name: a
    params: {model: mock/one}
    model_info: {id: a1}
  - model_name: a
    params: {model: openai/gpt-x, api_base: "http://127.0.0.1:9/v1", api_key: sk-secret-1}
    model_info: {id: "a\\"2"}
  - model_name: "b/é"
    params: {model: mock/two}
router_settings:
  fallbacks: [{a: ["b/é"]}]
"""


def service(text: str = CONFIG) -> GatewayService:
    svc = GatewayService(
        parse_config(text), "tcp:0", reactor=MemoryReactorClock(), handle_sighup=False
    )
    svc.site.timeOut = None
    return svc


def get(svc: GatewayService, path: str) -> tuple[int, bytes]:
    proto = svc.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert proto is not None
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def expected(svc: GatewayService) -> dict[str, Any]:
    """The document as the dict-building implementation wrote it."""
    router = svc.router
    now = router.health.now()
    aliases: dict[str, Any] = {}
    healthy = 0
    for alias, routes in router.table.routes.items():
        deps = []
        for route in routes:
            d = route.deployment
            state = router.health.get(d.id).snapshot(now)
            healthy += state["state"] == "healthy"
            state["latency_ttfb_s"] = router.latency.raw(d.id, "ttfb")
            state["latency_per_token_s"] = router.latency.raw(d.id, "per_token")
            deps.append({"id": d.id, "provider": d.provider.prefix, "model": d.model, **state})
        aliases[alias] = {"deployments": deps, "fallbacks": list(router.table.fallbacks_for(alias))}
    return {
        "status": "healthy" if healthy else "unhealthy",
        "ready": svc.ready,
        "models": aliases,
        "state_store": store_health(svc.limiter),
    }


def test_health_is_json_dumps_of_the_document() -> None:
    svc = service()
    status, body = get(svc, "/health")
    assert status == 200
    assert body == json.dumps(expected(svc)).encode()
    assert b"sk-secret-1" not in body


def test_health_follows_failures_cooldowns_and_in_flight_counts() -> None:
    svc = service()
    get(svc, "/health")  # the layout is built
    h = svc.router.health
    h.allowed_fails = 0
    h.failure('a"2', 'upstream said "no"\nand more', 503, transient=True)
    h.add_in_flight("a1", 2)
    h.success("a1")
    svc.reactor.advance(1.25)  # the cooldown's remaining time is read at render
    body = json.loads(get(svc, "/health")[1])
    assert body == expected(svc)
    dep = body["models"]["a"]["deployments"][1]
    assert dep["state"] == "cooldown" and dep["last_error_status"] == 503
    assert 0 < dep["cooldown_remaining_s"] < svc.config.general.cooldown_time
    for d in ("a1", 'a"2'):
        h.failure(d, "x", None, transient=True)
    h.failure("b/é", "x", None, transient=True)
    h.failure(svc.router.table.routes["b/é"][0].id, "x", None, transient=True)
    body = json.loads(get(svc, "/health")[1])
    assert body == expected(svc) and body["status"] == "unhealthy"


def test_health_follows_a_reload() -> None:
    svc = service()
    get(svc, "/health")
    config = parse_config("model_list: [{model_name: c, params: {model: mock/c}}]\n")
    svc.router.swap(build_table(config, lambda d: svc._table(config).routes["c"][0].provider))
    body = json.loads(get(svc, "/health")[1])
    assert list(body["models"]) == ["c"] and body == expected(svc)


def test_readiness_and_liveness() -> None:
    svc = service()
    assert get(svc, "/health/readiness") == (503, b'{"status": "not ready"}')
    svc._ready = True
    assert json.loads(get(svc, "/health/readiness")[1]) == {"status": "ready", "models": 2}
    assert json.loads(get(svc, "/health/liveliness")[1]) == {"status": "alive"}
    assert json.loads(get(svc, "/health")[1])["ready"] is True


def test_metrics_is_written_in_pieces_with_its_length() -> None:
    svc = service()
    get(svc, "/health")
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        proto = svc.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert proto is not None
        transport = StringTransport()
        proto.makeConnection(transport)
        extra = f"Accept: {accept}\r\n" if accept else ""
        proto.dataReceived(f"GET /metrics HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
        head, _, body = transport.value().partition(b"\r\n\r\n")
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        assert int(headers[b"Content-Length"]) == len(body) > 1000
        expected_body, ctype = svc.metrics.exposition(accept)
        assert headers[b"Content-Type"] == ctype.encode()
        # The same text: the request changed no series (no alias), its connection is open.
        assert body == expected_body
