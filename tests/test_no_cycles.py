"""No request leaves objects in reference cycles (issue 18, item 2).

With the cyclic collector disabled, a few hundred requests go through the real service
in memory (the resource tree, the three client dialects, routing with retries and
fallbacks, the stream relay), each on a connection of its own, then ``gc.collect()``
must find next to nothing: what a request leaves in a cycle is only freed by a
collection, and a collection over thousands of open streams is a stop-the-world pause.

The upstream is an agent that answers in memory from a script (the OpenAI and Anthropic
wire formats, JSON and SSE, failures, a stream cut in the middle, a stream held open
while the client goes away). The real daemon with its upstream client and sockets is
checked by ``tests/test_e2e_no_cycles.py``.
"""

from __future__ import annotations

import gc
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from gatewayd.config import parse_config
from gatewayd.service import GatewayService
from gatewayd.testing.replies import chat_completion, chat_stream
from gatewayd.upstream import http as provider_http

#: Most objects the collector may find after all the requests of one test (0 when this
#: was written): a little room for the harness, never some per request.
BOUND = 20


def _anthropic_message(model: str) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Hello there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }


def _anthropic_events(model: str) -> bytes:
    def ev(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + json.dumps(data).encode() + b"\n\n"

    start = {**_anthropic_message(model), "content": [], "stop_reason": None}
    return b"".join(
        [
            ev("message_start", {"type": "message_start", "message": start}),
            ev(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
            ),
            *(
                ev(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": w},
                    },
                )
                for w in ("Hello", " there")
            ),
            ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ev(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 2},
                },
            ),
            ev("message_stop", {"type": "message_stop"}),
        ]
    )


class _BodyTransport:
    """The upstream connection under a response body: stopping it ends the body."""

    def __init__(self, response: _Response) -> None:
        self.response = response

    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None:
        self.response.lose(Failure(ResponseFailed([Failure(ConnectionLost())])))


class _Response:
    """A scripted upstream answer; ``cut`` breaks a stream half way, ``hold`` keeps it
    open after its first half (the test ends it, or the client leaves)."""

    def __init__(
        self, code: int, body: bytes, ctype: bytes, cut: bool = False, hold: bool = False
    ) -> None:
        self.code = code
        self.phrase = b"OK" if code == 200 else b"Error"
        self.version = (b"HTTP", 1, 1)
        self.headers = Headers({b"content-type": [ctype]})
        self.length = len(body)
        self._body = body
        self._cut = cut
        self._hold = hold
        self._protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        self._protocol = protocol
        protocol.makeConnection(_BodyTransport(self))
        if not (self._cut or self._hold):
            protocol.dataReceived(self._body)
            self.lose(Failure(ResponseDone()))
            return
        half = self._body.find(b"\n\n", len(self._body) // 2) + 2
        protocol.dataReceived(self._body[:half])
        if self._cut:
            self.lose(Failure(ResponseFailed([Failure(ConnectionLost())])))

    def lose(self, reason: Failure) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connectionLost(reason)


@implementer(IAgent)
class ScriptedAgent:
    """Answers by the path's first segment: ``ok``, ``flaky`` (a 500 every other call),
    ``down`` (connection refused), ``cut`` (streams broken half way), ``hold`` (streams
    left open), ``claude`` (Anthropic's wire format)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.held: list[_Response] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        kind = uri.split(b"/")[3].decode()
        self.calls[kind] += 1
        sent = json.loads(body.body) if body is not None else {}
        stream = sent.get("stream") is True
        if kind == "down":
            return fail(ConnectionRefusedError())
        if kind == "flaky" and self.calls[kind] % 2:
            error = {"error": {"message": "try again", "type": "server_error"}}
            return succeed(_Response(500, json.dumps(error).encode(), b"application/json"))
        if kind == "claude":
            if stream:
                return succeed(_Response(200, _anthropic_events("c"), b"text/event-stream"))
            answer = json.dumps(_anthropic_message("c")).encode()
            return succeed(_Response(200, answer, b"application/json"))
        if not stream:
            answer = json.dumps(chat_completion(content="Hello there")).encode()
            return succeed(_Response(200, answer, b"application/json"))
        events = b"".join(chat_stream(content="Hello there my friend").pieces)
        response = _Response(
            200, events, b"text/event-stream", cut=kind == "cut", hold=kind == "hold"
        )
        if kind == "hold":
            self.held.append(response)
        return succeed(response)


def _entry(alias: str, path: str, provider: str = "openai") -> dict[str, Any]:
    params = {"model": f"{provider}/m", "api_base": f"http://up.test/{path}", "api_key": "sk-u"}
    if provider == "anthropic":
        params["api_base"] = f"http://up.test/{path}"
    return {"model_name": alias, "params": params}


CONFIG = {
    "model_list": [
        _entry("ok", "ok/v1"),
        _entry("flaky", "flaky/v1"),
        _entry("down", "down/v1"),
        _entry("cut", "cut/v1"),
        _entry("hold", "hold/v1"),
        _entry("claude", "claude", "anthropic"),
    ],
    "general_settings": {
        "num_retries": 2,
        "cooldown_time": 0,
        "fallbacks": [{"down": ["ok"]}],
    },
}


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GatewayService, ScriptedAgent]]:
    agent = ScriptedAgent()
    monkeypatch.setattr(
        provider_http.UpstreamAgents, "agent_for", lambda self, url, tls=None: agent
    )
    svc = GatewayService(parse_config(json.dumps(CONFIG)), "tcp:0", reactor=MemoryReactorClock())
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield svc, agent
    finally:
        if enabled:
            gc.enable()


PATHS = {
    "chat": b"/v1/chat/completions",
    "responses": b"/v1/responses",
    "messages": b"/v1/messages",
}


def _body(dialect: str, alias: str, stream: bool) -> bytes:
    doc: dict[str, Any] = {"model": alias, "stream": stream}
    if dialect == "responses":
        doc["input"] = "Say hello"
    else:
        doc["messages"] = [{"role": "user", "content": "Say hello"}]
    if dialect == "messages":
        doc["max_tokens"] = 16
    return json.dumps(doc).encode()


class Client:
    """One request on a connection of its own, through the service's real site."""

    def __init__(self, svc: GatewayService) -> None:
        self.svc = svc

    def send(self, dialect: str, alias: str, stream: bool) -> tuple[Any, StringTransport]:
        body = _body(dialect, alias, stream)
        raw = (
            b"POST " + PATHS[dialect] + b" HTTP/1.1\r\nHost: gw\r\n"
            b"Content-Type: application/json\r\nanthropic-version: 2023-06-01\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        ) + body
        transport = StringTransport()
        channel = self.svc.site.buildProtocol(None)
        channel.makeConnection(transport)
        channel.dataReceived(raw)
        clock = self.svc.reactor
        for _ in range(8):  # retry waits (backoff) run on the service's clock
            if b"\r\n\r\n" in transport.value():
                break
            clock.advance(1.0)
        return channel, transport

    def close(self, channel: Any, transport: StringTransport) -> None:
        channel.connectionLost(Failure(ConnectionDone()))
        # A real TCP transport lets go of its protocol when the connection is lost.
        transport.producer = None

    def request(self, dialect: str, alias: str, stream: bool) -> bytes:
        channel, transport = self.send(dialect, alias, stream)
        out: bytes = transport.value()
        self.close(channel, transport)
        return out


def _garbage() -> Counter[str]:
    """What the collector finds now, by type (objects kept for the count, then freed)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    return found


def _settled() -> None:
    """Everything before the measured requests (imports, first-use caches) collected."""
    gc.collect()


def _assert_next_to_nothing(requests: int) -> None:
    found = _garbage()
    total = sum(found.values())
    assert total <= BOUND, f"{total} objects in cycles after {requests} requests: {found}"


CASES = [
    (dialect, alias, stream, wanted)
    for dialect in ("chat", "responses", "messages")
    for stream in (False, True)
    for alias, wanted in (("ok", 200), ("flaky", 200), ("down", 200), ("claude", 200))
]


def test_requests_in_every_dialect_leave_no_cycles(
    service: tuple[GatewayService, ScriptedAgent],
) -> None:
    svc, _ = service
    client = Client(svc)
    for dialect, alias, stream, _wanted in CASES:  # first use: caches, lazy imports
        client.request(dialect, alias, stream)
    _settled()
    rounds = 10
    for _ in range(rounds):
        for dialect, alias, stream, wanted in CASES:
            out = client.request(dialect, alias, stream)
            assert out.startswith(b"HTTP/1.1 %d" % wanted), (dialect, alias, stream, out[:300])
            if stream:
                assert b"data:" in out, (dialect, alias, out[:300])
    _assert_next_to_nothing(rounds * len(CASES))


def test_failures_and_disconnects_leave_no_cycles(
    service: tuple[GatewayService, ScriptedAgent],
) -> None:
    svc, agent = service
    client = Client(svc)

    def one_round() -> None:
        for dialect in PATHS:
            # Every attempt fails (no fallback for "cut" as JSON: it answers; "down"
            # without a fallback is refused): an error answer in the client's dialect.
            out = client.request(dialect, "cut", True)  # broken half way: in-band error
            assert b"HTTP/1.1 200" in out and b"error" in out, out[-300:]
            channel, transport = client.send(dialect, "hold", True)  # the client leaves
            assert agent.held and b"data:" in transport.value()
            client.close(channel, transport)
            agent.held.clear()
            out = client.request(dialect, "nosuch", False)  # refused before routing
            assert b"HTTP/1.1 4" in out, out[:300]

    one_round()
    _settled()
    rounds = 40
    for _ in range(rounds):
        one_round()
    _assert_next_to_nothing(rounds * 9)


def test_a_stream_held_open_is_freed_when_its_upstream_ends(
    service: tuple[GatewayService, ScriptedAgent],
) -> None:
    svc, agent = service
    client = Client(svc)
    _settled()
    opened: list[tuple[Any, StringTransport]] = []
    for _ in range(50):
        opened.append(client.send("chat", "hold", True))
    held, agent.held = agent.held, []
    for response in held:
        response.lose(Failure(ResponseDone()))
    for channel, transport in opened:
        assert transport.value().endswith(b"0\r\n\r\n"), transport.value()[-200:]
        client.close(channel, transport)
    del opened, held
    _assert_next_to_nothing(50)


def test_the_harness_sees_a_cycle() -> None:
    """The measure itself: a cycle made on purpose is found."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        for _ in range(100):
            a: dict[str, Any] = {}
            a["self"] = a
        del a
        assert _garbage()["dict"] >= 100
    finally:
        if enabled:
            gc.enable()


# Deferred is imported for type checkers reading the agent's contract.
_ = Deferred


def test_cached_answers_and_coalesced_requests_leave_no_cycles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the response cache on: misses stored, repeats answered from it."""
    agent = ScriptedAgent()
    monkeypatch.setattr(
        provider_http.UpstreamAgents, "agent_for", lambda self, url, tls=None: agent
    )
    doc = json.loads(json.dumps(CONFIG))
    doc["general_settings"]["cache"] = {"type": "memory", "ttl": 3600}
    svc = GatewayService(parse_config(json.dumps(doc)), "tcp:0", reactor=MemoryReactorClock())
    client = Client(svc)
    enabled = gc.isenabled()
    gc.disable()
    try:
        cases = [
            (d, a, s)
            for d in PATHS
            for a in ("ok", "claude")
            for s in (False, True)
            # (an openai/ deployment takes Responses natively: this agent speaks chat only)
            if (d, a) != ("responses", "ok")
        ]
        for case in cases:
            client.request(*case)  # stored
        _settled()
        calls = sum(agent.calls.values())
        rounds = 10
        for _ in range(rounds):
            for dialect, alias, stream in cases:
                out = client.request(dialect, alias, stream)
                assert out.startswith(b"HTTP/1.1 200"), out[:300]
                head = out.split(b"\r\n\r\n")[0].lower()
                assert b"x-gatewayd-cache: hit" in head, (dialect, alias, stream, head)
        assert sum(agent.calls.values()) == calls  # every repeat answered from the cache
        _assert_next_to_nothing(rounds * len(cases))
    finally:
        if enabled:
            gc.enable()
