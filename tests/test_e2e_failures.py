"""Routing end to end: fake upstreams that fail in each way, the real daemon in front."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import UPSTREAM_KEY, GatewayFactory, openai_entry
from test_e2e_api import CHAT, assert_openai_error, post
from test_e2e_streaming import wait_for

from gatewayd.testing import (
    ContextLengthError,
    Error,
    FakeUpstream,
    Hang,
    NonJSON,
    RawResponse,
    Reply,
    Reset,
    Stream,
    closed_port,
)


@pytest.fixture
def backup() -> Iterator[FakeUpstream]:
    with FakeUpstream(content="from backup") as server:
        yield server


def pair_config(
    a: FakeUpstream, b: FakeUpstream, backup: FakeUpstream, **general: Any
) -> dict[str, Any]:
    return {
        "model_list": [
            openai_entry("pair", a, "a-model", timeout=1),
            openai_entry("pair", b, "b-model", timeout=1),
            openai_entry("backup", backup, "backup-model"),
        ],
        "general_settings": {"num_retries": 2, "fallbacks": [{"pair": ["backup"]}], **general},
    }


def retry_lines(gw: Any) -> list[str]:
    """The daemon's own account of each wait before a retry: ``retrying in X s``."""
    marker = "retrying in"
    return [
        marker + line.split(marker, 1)[1].rstrip()
        for line in gw.log().splitlines()
        if marker in line
    ]


def chat(port: int, alias: str = "pair") -> tuple[int, dict[str, str], Any, float]:
    start = time.monotonic()
    status, headers, body = post(port, "/v1/chat/completions", {**CHAT, "model": alias})
    return status, headers, body, time.monotonic() - start


@pytest.mark.parametrize(
    "failure",
    [
        Error(500),
        Error(503),
        Error(529),
        Error(502, body=b"<html>bad gateway</html>"),
        Reset(),
        RawResponse(b"HTTP/1.1 200 OK\r\nContent-Type: appl"),
        Hang(5),
        NonJSON(),
    ],
    ids=["500", "503", "529", "502-html", "reset", "reset-mid-headers", "hang", "non-json-200"],
)
def test_transient_failure_on_one_deployment_is_invisible(
    gateway: GatewayFactory,
    upstream: FakeUpstream,
    upstream2: FakeUpstream,
    backup: FakeUpstream,
    failure: Any,
) -> None:
    # The first call, on whichever of the pair is picked, fails; every later one answers.
    calls: list[int] = []

    def first_fails(_: Any) -> Any:
        calls.append(1)
        return failure if len(calls) == 1 else Reply()

    upstream.set_default(first_fails)
    upstream2.set_default(first_fails)
    gw = gateway(pair_config(upstream, upstream2, backup))
    status, headers, body, _ = chat(gw.port)
    assert status == 200, body
    assert headers["x-gatewayd-attempts"] == "2"
    assert headers["x-gatewayd-model"] == "pair"
    assert "x-gatewayd-fallback" not in headers
    assert upstream.count() == 1 and upstream2.count() == 1
    assert backup.count() == 0
    # The failed try costs at most its own time (a hang: the 1 s attempt timeout), no
    # backoff: the daemon's own account, not a time bound a busy machine could miss.
    assert retry_lines(gw) == ["retrying in 0.00 s"]


def test_all_deployments_failing_transiently_falls_back(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, backup: FakeUpstream
) -> None:
    upstream.set_default(Error(503))
    upstream2.set_default(Error(503))
    gw = gateway(pair_config(upstream, upstream2, backup))
    status, headers, body, elapsed = chat(gw.port)
    assert status == 200 and body["choices"][0]["message"]["content"] == "from backup"
    assert headers["x-gatewayd-fallback"] == "backup"
    assert headers["x-gatewayd-model"] == "backup"
    assert headers["x-gatewayd-attempts"] == "4"
    assert upstream.count() + upstream2.count() == 3
    # One backoff sleep (the second retry's: 0.75-1 s) after both were tried, and only one.
    retries = retry_lines(gw)
    assert retries[0] == "retrying in 0.00 s" and len(retries) == 2, retries
    assert 0.75 <= float(retries[1].split()[2]) <= 1.0, retries
    assert elapsed >= 0.75


def test_429_retry_after_is_waited_and_a_long_one_skips_to_fallback(
    gateway: GatewayFactory, upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("solo", upstream), openai_entry("backup", backup)],
            "general_settings": {"num_retries": 1, "fallbacks": [{"solo": ["backup"]}]},
        }
    )
    upstream.enqueue(Error(429, headers={"Retry-After": "1"}))
    status, headers, _, elapsed = chat(gw.port, "solo")
    assert status == 200 and headers["x-gatewayd-attempts"] == "2"
    assert "x-gatewayd-fallback" not in headers
    assert elapsed >= 0.9
    upstream.enqueue(Error(429, headers={"retry-after-ms": "300"}))
    status, headers, _, elapsed = chat(gw.port, "solo")
    assert status == 200 and elapsed >= 0.25
    upstream.enqueue(Error(429, headers={"Retry-After": "120"}))
    status, headers, _, elapsed = chat(gw.port, "solo")
    assert status == 200 and headers["x-gatewayd-fallback"] == "backup"
    assert elapsed < 60  # not the 120 s asked for


def test_client_errors_are_returned_unchanged_after_one_call(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, backup: FakeUpstream
) -> None:
    gw = gateway(pair_config(upstream, upstream2, backup))
    for status_code in (400, 413, 422):
        upstream.reset()
        upstream2.reset()
        err = Error(
            status_code, f"bad request {status_code}", code="invalid_value", param="messages"
        )
        upstream.set_default(err)
        upstream2.set_default(err)
        status, headers, body, _ = chat(gw.port)
        assert status == status_code
        assert body == {
            "error": {
                "message": f"bad request {status_code}",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "invalid_value",
            }
        }
        assert upstream.count() + upstream2.count() == 1
        assert headers["x-gatewayd-attempts"] == "1"
    assert backup.count() == 0


def test_401_falls_back_after_one_call(
    gateway: GatewayFactory, upstream: FakeUpstream, backup: FakeUpstream
) -> None:
    upstream.set_default(Error(401, "Incorrect API key provided"))
    gw = gateway(
        {
            "model_list": [openai_entry("solo", upstream), openai_entry("backup", backup)],
            "general_settings": {"num_retries": 3, "fallbacks": [{"solo": ["backup"]}]},
        }
    )
    status, headers, _, _ = chat(gw.port, "solo")
    assert status == 200 and headers["x-gatewayd-fallback"] == "backup"
    assert upstream.count() == 1


def test_context_length_error_goes_to_context_window_fallbacks(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, backup: FakeUpstream
) -> None:
    upstream.set_default(ContextLengthError())
    gw = gateway(
        {
            "model_list": [
                openai_entry("small", upstream),
                openai_entry("other", upstream2),
                openai_entry("large", backup),
            ],
            "general_settings": {
                "num_retries": 2,
                "fallbacks": [{"small": ["other"]}],
                "context_window_fallbacks": [{"small": ["large"]}],
            },
        }
    )
    status, headers, _, _ = chat(gw.port, "small")
    assert status == 200 and headers["x-gatewayd-fallback"] == "large"
    assert upstream.count() == 1 and upstream2.count() == 0


def test_everything_failing_reports_the_last_error_and_the_attempts(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, backup: FakeUpstream
) -> None:
    upstream.set_default(Error(503, "overloaded"))
    upstream2.set_default(Error(503, "overloaded"))
    backup.set_default(Error(500, "backup broke"))
    gw = gateway(pair_config(upstream, upstream2, backup, num_retries=0))
    status, headers, body, _ = chat(gw.port)
    assert status == 500
    err = assert_openai_error(body)
    assert "backup broke" in err["message"]
    assert (
        "2 attempt(s)" in err["message"] and "pair" in err["message"] and "backup" in err["message"]
    )
    assert headers["x-gatewayd-attempts"] == "2"


def test_connection_refused_everywhere_is_502_without_secrets(gateway: GatewayFactory) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    gw = gateway(
        {
            "model_list": [
                {
                    "model_name": "dead",
                    "params": {"model": "openai/x", "api_base": dead, "api_key": UPSTREAM_KEY},
                }
            ],
            "general_settings": {"num_retries": 1},
        }
    )
    status, headers, body, elapsed = chat(gw.port, "dead")
    assert status == 502 and assert_openai_error(body)
    assert UPSTREAM_KEY not in str(body) and UPSTREAM_KEY not in gw.log()
    assert headers["x-gatewayd-attempts"] == "2"
    assert elapsed < 3


def test_a_deployment_in_cooldown_is_not_called(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream, backup: FakeUpstream
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    gw = gateway(
        {
            "model_list": [
                {
                    "model_name": "pair",
                    "params": {"model": "openai/x", "api_base": dead, "api_key": "k"},
                    "model_info": {"id": "dead-one"},
                },
                openai_entry("pair", upstream),
            ],
            "general_settings": {"num_retries": 1, "allowed_fails": 0, "cooldown_time": 60},
        }
    )
    attempts = []
    for _ in range(20):
        status, headers, _, _ = chat(gw.port)
        assert status == 200
        attempts.append(int(headers["x-gatewayd-attempts"]))
    # The dead deployment is tried at most once, then cooled down: never waited on again.
    assert sum(attempts) <= 21
    status, _, data = __import__("test_e2e_api").raw(gw.port, "GET", "/health")
    import json

    health = json.loads(data)
    states = {d["id"]: d["state"] for d in health["models"]["pair"]["deployments"]}
    assert states["dead-one"] == "cooldown"


def test_client_disconnect_while_waiting_cancels_the_upstream_request(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    # Headers come at once, the body never completes: the gateway is waiting on the upstream.
    upstream.set_default(Stream(first_byte_delay=30))
    gw = gateway({"model_list": [openai_entry("slow", upstream)]})
    body = json.dumps({**CHAT, "model": "slow"}).encode()
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    stats = upstream.wait_for_streams(1)[0]
    time.sleep(0.3)
    closed = time.monotonic()
    s.close()
    assert wait_for(lambda: stats.client_closed, 8), "the upstream request was left running"
    # Well before the upstream would have ended by itself, with room for a busy machine.
    assert stats.closed_at is not None and stats.closed_at - closed < 5.0


def test_a_pooled_connection_the_upstream_dropped_is_retried_transparently(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    # The second request goes out on the kept-alive connection, which the upstream drops
    # without answering (as one closing an idle connection does): no retries configured,
    # yet the client must not see it.
    upstream.enqueue(Reply(), Reset(), Reply())
    gw = gateway({"model_list": [openai_entry("solo", upstream)]})
    assert chat(gw.port, "solo")[0] == 200
    status, headers, _, _ = chat(gw.port, "solo")
    assert status == 200 and headers["x-gatewayd-attempts"] == "1"
    assert upstream.count() == 3
    assert upstream.connections_opened == 2
