"""The real daemon leaves no objects in reference cycles (issue 18, item 2).

The installed daemon runs with :class:`~gatewayd.testing.gc_watch.GCWatch` (a
``sitecustomize`` that turns the collector off at start and, on ``SIGUSR2``, reports what
one ``gc.collect()`` finds). A warm-up round, a first report (what start-up and first
use left), a few hundred requests (the three dialects through the official SDKs, JSON
and streamed, an upstream error retried, a dead deployment falling back, an Anthropic
upstream, a client leaving mid-stream), then a second report: it must find next to
nothing, and the objects the daemon holds must not have grown over the last six rounds.
The fake upstreams run in the test's process, not the daemon's.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from conftest import GatewayFactory, openai_entry, sdk

from gatewayd.testing import Error, FakeUpstream, Reply, Stream, closed_port
from gatewayd.testing.anthropic_upstream import AnthropicUpstream
from gatewayd.testing.gc_watch import GCWatch

#: Most objects a collection may find after all the requests (0 per request; a little
#: room for what the daemon does meanwhile, e.g. a reactor-lag tick's first metric key).
BOUND = 100
HI: Any = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def anthropic_up() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream() as server:
        yield server


def _leave_mid_stream(port: int) -> None:
    """A streamed request whose client reads the first event and hangs up."""
    body = json.dumps({"model": "slow", "messages": HI, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        got = b""
        while b"data:" not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk


def _upstream_streams_over(upstream: FakeUpstream, timeout: float = 10.0) -> None:
    """Wait (bounded) until the daemon has let go of every upstream stream: the ones
    whose client hung up are cancelled, so the upstream sees its peer close."""
    deadline = time.monotonic() + timeout
    while not all(s.finished or s.client_closed for s in upstream.stream_stats):
        assert time.monotonic() < deadline, "the daemon did not cancel a stream left by its client"
        time.sleep(0.02)


def test_requests_through_the_daemon_leave_no_cycles(
    gateway: GatewayFactory, upstream: FakeUpstream, anthropic_up: AnthropicUpstream
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    config = {
        "model_list": [
            # Chat only (vLLM's wire): Responses clients are translated to chat.
            {"model_name": "ok", "params": {"model": "vllm/up-model", "api_base": upstream.url}},
            openai_entry("slow", upstream, model="slow"),
            # Two dead deployments: the retry goes to the second at once, then the fallback.
            {"model_name": "down", "params": {"model": "vllm/m", "api_base": dead}},
            {"model_name": "down", "params": {"model": "vllm/n", "api_base": dead}},
            {
                "model_name": "claude",
                "params": {
                    "model": "anthropic/claude-x",
                    "api_base": anthropic_up.url,
                    "api_key": "sk-ant",
                },
            },
        ],
        "general_settings": {
            "num_retries": 1,
            "cooldown_time": 0,
            "fallbacks": [{"down": ["ok"]}],
        },
    }

    def slow_or_reply(record: Any) -> Any:
        if record.json().get("model") == "slow":
            return Stream(events=50, interval=0.05)
        return Reply()

    upstream.set_default(slow_or_reply)
    with GCWatch(disable=True, collect=True) as watch:
        gw = gateway(config, env=watch.env())
        chat = sdk(gw.base_url)
        claude = anthropic.Anthropic(base_url=gw.url, api_key="none", max_retries=0)

        def one_round() -> int:
            n = 0
            for alias in ("ok", "down", "claude"):
                answer = chat.chat.completions.create(model=alias, messages=HI)
                assert answer.choices[0].message.content
                chunks = list(chat.chat.completions.create(model=alias, messages=HI, stream=True))
                assert chunks
                raw = claude.messages.with_raw_response.create(
                    model=alias,
                    max_tokens=16,
                    messages=HI,
                )
                assert raw.parse().content
                # The dead deployments were tried, then the fallback answered.
                tried = "3" if alias == "down" else "1"
                assert raw.headers["x-gatewayd-attempts"] == tried, dict(raw.headers)
                with claude.messages.stream(model=alias, max_tokens=16, messages=HI) as s:
                    assert s.get_final_message().content
                reply = chat.responses.create(model=alias, input="Say hello")
                assert reply.output_text
                events = list(chat.responses.create(model=alias, input="Say hello", stream=True))
                assert events
                n += 6
            upstream.enqueue(Error(500, headers={"Retry-After": "0"}))  # retried at once
            retried = chat.chat.completions.with_raw_response.create(
                model="ok",
                messages=HI,
            )
            assert retried.headers["x-gatewayd-attempts"] == "2"
            _leave_mid_stream(gw.port)
            return n + 2

        one_round()
        _upstream_streams_over(upstream)
        before = watch.report(gw.pid)
        assert before["enabled"] is False
        requests = sum(one_round() for _ in range(6))
        _upstream_streams_over(upstream)
        middle = watch.report(gw.pid)
        requests += sum(one_round() for _ in range(6))
        _upstream_streams_over(upstream)
        after = watch.report(gw.pid)
        # Memory flat: the objects the daemon holds (frozen start-up heap aside) do not
        # grow with the requests (six rounds more: none kept per request).
        assert after["tracked"] <= middle["tracked"] + BOUND, (before, middle, after)
        found = after["found"]
        assert found <= BOUND, (
            f"{found} objects in cycles after {requests} requests: {after['found_by_type']}"
            + "".join(f"\n{path}" for path in after.get("cycles", []))
        )


def _wait_log(gw: Any, text: str, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while gw.log().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{gw.log()[-2000:]}"
        time.sleep(0.05)


def test_the_heap_is_frozen_at_start_and_after_each_reload(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    config: dict[str, Any] = {"model_list": [openai_entry("ok", upstream)]}
    with GCWatch() as watch:
        gw = gateway(config, env=watch.env())
        started = watch.report(gw.pid)
        assert started["enabled"] is True
        assert started["threshold"] == [10_000, 2, 100_000]
        assert started["frozen"] > 10_000
        frozen = [started["frozen"]]
        for i in range(2):
            config["model_list"].append(openai_entry(f"new{i}", upstream))
            gw.write_config(config)
            gw.send_signal(signal.SIGHUP)
            _wait_log(gw, "config reloaded", i + 1)
            frozen.append(watch.report(gw.pid)["frozen"])
        # The new config and table are frozen each time (and the old ones, still
        # counted, are freed by reference counting).
        assert frozen[1] > frozen[0] and frozen[2] > frozen[1], frozen
        assert sdk(gw.base_url).chat.completions.create(model="new1", messages=HI).choices
