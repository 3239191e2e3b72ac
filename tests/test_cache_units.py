"""The cache package in memory: the key, the LRU store on a task.Clock, entries as
text, streams assembled into JSON, controls, replays and the coalescing flight."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gatewayd.cache.assemble import json_of_stream, stream_of_json
from gatewayd.cache.controls import parse_controls
from gatewayd.cache.entry import CachedAnswer
from gatewayd.cache.flight import Flight
from gatewayd.cache.key import cache_key
from gatewayd.cache.memory import MemoryAnswers
from gatewayd.cache.replay import ReplayStream
from gatewayd.dialects import Dialect
from gatewayd.providers.base import UpstreamResponse
from gatewayd.routing import RouteError, RouteResult
from gatewayd.upstream.outcomes import EventStream, StreamSink, UpstreamFailure

BODY = {"model": "a", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0}


def key(body: dict[str, Any], scope: str | None = "k", dialect: str = "chat") -> str:
    return cache_key("a", "chat/completions", dialect, body, scope)


def test_key_is_canonical_and_scoped() -> None:
    same = {"temperature": 1, "messages": BODY["messages"], "model": "a", "stream": True}
    assert key(BODY) == key({**same, "user": "u", "metadata": {"x": 1}, "stream_options": {}})
    assert key(BODY) != key({**BODY, "temperature": 1.5})
    assert key(BODY) != key(BODY, scope="other") != key(BODY, scope=None)
    assert key(BODY) != key(BODY, dialect="messages")
    assert cache_key("a", "chat/completions", "chat", BODY, "k", "ns") != key(BODY)


def entry(size: int = 100, stored: float = 0.0) -> CachedAnswer:
    return CachedAnswer(200, Dialect.CHAT, "d", b"x" * size, None, None, stored)


def test_memory_store_is_bounded_lru_with_ttl() -> None:
    clock = Clock()
    evicted: list[int] = []
    one = entry().size
    store = MemoryAnswers(clock, one * 2, evicted.append)
    store.put("a", entry(), 10)
    store.put("b", entry(), 10)
    assert store.get("a") is not None  # a is now the most recently used
    store.put("c", entry(), 10)
    assert store.get("b") is None and store.get("a") is not None and evicted == [1]
    assert store.bytes == one * 2
    clock.advance(10)
    assert store.get("a") is None and store.get("c") is None and store.bytes == 0
    store.put("huge", entry(one * 3), 10)  # larger than the whole bound: not kept
    assert len(store) == 0
    store.put("a", entry(), 10)
    store.put("b", entry(), 10)
    store.resize(one)
    assert len(store) == 1 and store.get("b") is not None


def test_entry_round_trips_as_text() -> None:
    e = CachedAnswer(200, Dialect.MESSAGES, "d", None, (b"data: \xff\xfe\n\n", b"x"), {"a": 1}, 5.0)
    again = CachedAnswer.loads(e.dumps())
    assert again == e
    assert CachedAnswer.loads("not json") is None and CachedAnswer.loads('{"v": 9}') is None


def ev(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def test_messages_events_add_up_to_the_message() -> None:
    events = (
        ev("message_start", {"type": "message_start", "message": {"id": "m", "role": "assistant", "content": [], "usage": {"input_tokens": 3}}})
        + ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
        ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}})
        + ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}}),
        ev("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        ev("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}})
        + ev("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ty": "Rome"}'}}),
        ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}})
        + ev("message_stop", {"type": "message_stop"}),
    )  # fmt: skip
    out = json.loads(json_of_stream(Dialect.MESSAGES, events) or b"")
    assert out["content"] == [
        {"type": "thinking", "thinking": "hm", "signature": "s"},
        {"type": "tool_use", "id": "t", "name": "f", "input": {"city": "Rome"}},
    ]
    assert out["stop_reason"] == "tool_use"
    assert out["usage"] == {"input_tokens": 3, "output_tokens": 7}


def test_responses_events_give_the_completed_response() -> None:
    done = {"type": "response.completed", "response": {"id": "resp_1", "output": []}}
    events = (ev("response.created", {"type": "response.created"}), ev("response.completed", done))
    assert json.loads(json_of_stream(Dialect.RESPONSES, events) or b"")["id"] == "resp_1"
    assert json_of_stream(Dialect.RESPONSES, events[:1]) is None


def test_chat_json_and_stream_round_trip() -> None:
    chat = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "yes",
                    "reasoning_content": "because",
                    "tool_calls": [
                        {
                            "id": "t",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    events = stream_of_json(Dialect.CHAT, json.dumps(chat).encode())
    assert events is not None and events[-1] == b"data: [DONE]\n\n"
    back = json.loads(json_of_stream(Dialect.CHAT, events) or b"")
    assert back["choices"] == chat["choices"] and back["usage"] == chat["usage"]
    assert stream_of_json(Dialect.MESSAGES, b"{}") is None


def test_controls_from_the_header_and_the_body() -> None:
    c = parse_controls(b"no-store, max-age=30", None)
    assert (c.read, c.write, c.max_age) == (True, False, 30.0)
    c = parse_controls(None, {"no-cache": True, "ttl": 5, "s-maxage": 2, "namespace": "n"})
    assert (c.read, c.write, c.ttl, c.max_age, c.namespace) == (False, True, 5.0, 2.0, "n")
    for bad in ({"ttl": "x"}, {"no-cache": "yes"}, {"namespace": 3}, "on"):
        with pytest.raises(RouteError) as e:
            parse_controls(None, bad)
        assert e.value.status == 400
    with pytest.raises(RouteError):
        parse_controls("max-age=soon", None)


class Sink:
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.ended: list[UpstreamFailure | None] = []

    def event(self, data: bytes) -> None:
        self.got.append(data)

    def end(self, failure: UpstreamFailure | None) -> None:
        self.ended.append(failure)


def test_replay_honours_pause_and_resume() -> None:
    sink = Sink()
    replay = ReplayStream([b"a", b"b", b"c"])

    class Pausing(Sink):
        def event(self, data: bytes) -> None:
            super().event(data)
            replay.pause()

    p = Pausing()
    replay.start(p)
    assert p.got == [b"a"] and not p.ended
    replay.resume()
    replay.resume()
    replay.resume()
    assert p.got == [b"a", b"b", b"c"] and p.ended == [None]
    ReplayStream([b"x"]).start(sink)
    assert sink.got == [b"x"] and sink.ended == [None]


class Upstream(EventStream):
    def __init__(self) -> None:
        self.sink: StreamSink | None = None
        self.paused = False
        self.cancelled = False

    def start(self, sink: StreamSink) -> None:
        self.sink = sink

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def cancel(self) -> None:
        self.cancelled = True


def flight(backlog: int = 1000) -> tuple[Flight, list[Any]]:
    done: list[Any] = []

    def serve(e: CachedAnswer, stream: bool) -> RouteResult | None:
        return None

    f = Flight(serve, lambda fl, e, r: done.append(e), lambda: 0.0, backlog, 10_000)
    return f, done


def streamed(finished: list[Any]) -> tuple[RouteResult, Upstream]:
    up = Upstream()
    response = UpstreamResponse(200, stream=up)
    return RouteResult(response, "a", "d", 1, None, finish=finished.append), up


def test_a_flight_fans_out_and_a_slow_reader_falls_behind_alone() -> None:
    f, done = flight(backlog=10)
    route: Deferred[RouteResult] = Deferred()
    results: list[Any] = []
    f.lead(route, True).addCallback(results.append)
    f.join(True).addCallback(results.append)
    f.join(True).addCallback(results.append)
    finished: list[Any] = []
    result, up = streamed(finished)
    route.callback(result)
    sinks = [Sink(), Sink(), Sink()]
    for r, s in zip(results, sinks, strict=True):
        r.response.stream.start(s)
    assert f.owned is results[0] and results[1].tickets == []
    slow = results[2].response.stream
    slow.pause()
    assert not up.paused  # the others still read
    assert up.sink is f
    f.event(b"data: 1\n\n")
    assert sinks[0].got == sinks[1].got == [b"data: 1\n\n"] and sinks[2].got == []
    f.event(b"data: 2222222\n\n")  # the slow one is now more than 10 bytes behind
    assert isinstance(sinks[2].ended[0], UpstreamFailure)
    late = f.join(True)  # a late joiner starts from the first event
    late_sink = Sink()
    late_result: list[Any] = []
    late.addCallback(late_result.append)
    late_result[0].response.stream.start(late_sink)
    assert late_sink.got == [b"data: 1\n\n", b"data: 2222222\n\n"]
    f.event(b"data: [DONE]\n\n")
    f.end(None)
    assert sinks[0].ended == [None] and late_sink.ended == [None] and finished == [None]
    assert done[0] is not None and done[0].events[-1] == b"data: [DONE]\n\n"


def test_a_flight_pauses_upstream_only_when_all_are_paused_and_cancels_when_all_go() -> None:
    f, done = flight()
    route: Deferred[RouteResult] = Deferred()
    results: list[Any] = []
    f.lead(route, True).addCallback(results.append)
    f.join(True).addCallback(results.append)
    finished: list[Any] = []
    result, up = streamed(finished)
    route.callback(result)
    a, b = (r.response.stream for r in results)
    a.start(Sink())
    b.start(Sink())
    a.pause()
    assert not up.paused
    b.pause()
    assert up.paused
    a.resume()
    assert not up.paused
    a.cancel()
    assert not up.cancelled
    b.cancel()
    assert up.cancelled and finished == [None] and done == [None]


def test_waiters_that_all_go_cancel_the_route() -> None:
    f, _ = flight()
    cancelled: list[bool] = []
    route: Deferred[RouteResult] = Deferred(lambda d: cancelled.append(True))
    leader = f.lead(route, False)
    other = f.join(False)
    leader.cancel()
    assert not cancelled
    other.cancel()
    assert cancelled == [True] and f.done


def test_a_failed_route_fails_the_leader_and_frees_the_others() -> None:
    f, _ = flight()
    route: Deferred[RouteResult] = Deferred()
    failures: list[Any] = []
    alone: list[Any] = []
    f.lead(route, False).addErrback(failures.append)
    f.join(False).addCallback(alone.append)
    route.errback(RouteError(502, {"message": "x"}, 1))
    assert len(failures) == 1 and alone == [None]


def test_the_cache_stage_is_in_the_pipeline_only_when_configured() -> None:
    from gatewayd.cache import CacheStage
    from gatewayd.web.stage_list import request_pipeline

    stage = CacheStage()
    assert stage not in request_pipeline().stages
    stages = request_pipeline(stage).stages
    # The lookup above the limits (a hit is admitted without tokens), the answer innermost.
    assert stages[0] is stage.lookup and stages[-1] is stage and len(stages) == 3


class Texts:
    """A TextStore whose answers the test gives."""

    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []
        self.values: dict[str, str] = {}

    def get(self, key: str) -> Deferred[str | None]:
        d: Deferred[str | None] = Deferred()
        self.pending.append(d)
        return d

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        self.values[key] = value
        return Deferred()

    def close(self) -> Deferred[None]:
        return Deferred()


def test_redis_answers_turn_failures_into_misses() -> None:
    from gatewayd.cache.redis_store import RedisAnswers
    from gatewayd.state import StoreUnavailable

    texts = Texts()
    store = RedisAnswers(texts, 10_000)
    e = entry()
    store.put("k", e, 60)
    assert CachedAnswer.loads(texts.values["cache:k"]) == e
    got: list[Any] = []
    store.get("k").addCallback(got.append)
    texts.pending[-1].callback(texts.values["cache:k"])
    assert got == [e]
    store.get("k").addCallback(got.append)
    texts.pending[-1].errback(StoreUnavailable("down"))
    assert got == [e, None] and store._down
    failed: list[Any] = []
    d = store.get("k")
    d.addErrback(failed.append)
    d.cancel()  # its client went: not a miss, not an outage
    assert len(failed) == 1 and got == [e, None]
    store.put("big", entry(20_000), 60)  # over max_bytes: not written
    assert "cache:big" not in texts.values
