"""Python function calls per relayed frame, the repeatable figure for the stream relay's
per-frame cost (issue 18, item 3): the real service in memory (as ``bench/inprocess.py``)
with an upstream whose stream arrives one frame per read, as a slow upstream's does.

    python bench/relay_calls.py [--frames 64] [--streams 200] [--profile]

Prints calls per frame (cProfile's count over streams of ``--frames`` frames, less the
count over one-frame streams, per extra frame) for a Chat client on an OpenAI upstream
(passed through), a Messages and a Responses client on it (translated), and a Chat client
on an Anthropic upstream; ``--profile`` also prints the top functions per frame.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

from inprocess import _cprofile, _Transport
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import FileLogObserver, globalLogBeginner
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from gatewayd.config import parse_config
from gatewayd.observability.log import _text_formatter
from gatewayd.service import GatewayService
from gatewayd.upstream import http as provider_http

OPENAI = (
    'data: {{"id":"chatcmpl-b","object":"chat.completion.chunk","created":1700000000,'
    '"model":"bench","choices":[{{"index":0,"delta":{{"content":"tok{0} "}},'
    '"finish_reason":null}}]}}\n\n'
)
OPENAI_END = (
    'data: {"id":"chatcmpl-b","object":"chat.completion.chunk","created":1700000000,'
    '"model":"bench","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}\n\ndata: [DONE]\n\n'
)
ANTHROPIC_START = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_b",'
    '"type":"message","role":"assistant","model":"bench","content":[],"stop_reason":null,'
    '"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    '"content_block":{"type":"text","text":""}}\n\n'
)
ANTHROPIC = (
    'event: content_block_delta\ndata: {{"type":"content_block_delta","index":0,'
    '"delta":{{"type":"text_delta","text":"tok{0} "}}}}\n\n'
)
ANTHROPIC_END = (
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    '"stop_sequence":null},"usage":{"output_tokens":9}}\n\n'
    'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


class _FrameResponse:
    """A 200 SSE answer delivered one frame per ``dataReceived``."""

    def __init__(self, frames: list[bytes]) -> None:
        self.code = 200
        self.phrase = b"OK"
        self.version = (b"HTTP", 1, 1)
        self.headers = Headers({b"content-type": [b"text/event-stream"]})
        self.length = None
        self._frames = frames
        self._protocol: Any = None

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(_Transport())
        protocol.dataReceived(self._frames[0])  # the first: the attempt succeeds
        self._protocol = protocol

    def rest(self) -> None:
        """The other frames, one per read, once the relay is attached; then the end."""
        protocol, self._protocol = self._protocol, None
        for frame in self._frames[1:]:
            protocol.dataReceived(frame)
        protocol.connectionLost(Failure(ResponseDone()))


@implementer(IAgent)
class _FramesAgent:
    frames = 64

    def __init__(self) -> None:
        self._made: dict[tuple[bool, int], list[bytes]] = {}

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        key = (b"/anthropic" in uri, self.frames)
        reads = self._made.get(key)
        if reads is None:  # made once, not counted in the frames' calls
            reads = self._made[key] = self._reads(*key)
        self.last = _FrameResponse(reads)
        return succeed(self.last)

    @staticmethod
    def _reads(anthropic: bool, n: int) -> list[bytes]:
        if anthropic:
            texts = [ANTHROPIC_START + ANTHROPIC.format(0)]
            texts += [ANTHROPIC.format(i) for i in range(1, n)]
            texts.append(ANTHROPIC_END)
        else:
            texts = [OPENAI.format(i) for i in range(n)] + [OPENAI_END]
        return [t.encode() for t in texts]


AGENT = _FramesAgent()


def build() -> GatewayService:
    def entry(alias: str, model: str, base: str) -> dict[str, Any]:
        return {"model_name": alias, "params": {"model": model, "api_base": base, "api_key": "k"}}

    doc = {
        "model_list": [
            entry("sse", "openai/bench", "http://up.test/v1"),
            entry("chatonly", "vllm/bench", "http://up.test/v1"),
            entry("claude", "anthropic/bench", "http://up.test/anthropic"),
        ],
        "router_settings": {"num_retries": 2},
    }
    provider_http.UpstreamAgents.agent_for = lambda self, url, tls=None: AGENT  # type: ignore[method-assign]
    return GatewayService(parse_config(json.dumps(doc)), "tcp:0", reactor=MemoryReactorClock())


CASES = {
    "chat (passed through)": ("/v1/chat/completions", "sse"),
    "messages client, OpenAI upstream": ("/v1/messages", "sse"),
    "responses client, OpenAI upstream": ("/v1/responses", "chatonly"),
    "chat client, Anthropic upstream": ("/v1/chat/completions", "claude"),
}


def request_bytes(path: str, alias: str) -> bytes:
    doc: dict[str, Any] = {"model": alias, "stream": True}
    if path == "/v1/responses":
        doc["input"] = "Say hello"
    else:
        doc["messages"] = [{"role": "user", "content": "Say hello"}]
        doc["max_tokens"] = 64
    body = json.dumps(doc).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        f"anthropic-version: 2023-06-01\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def run(service: GatewayService, raw: bytes, streams: int) -> None:
    transport = StringTransport()
    channel = service.site.buildProtocol(None)
    channel.makeConnection(transport)
    for _ in range(streams):
        channel.dataReceived(raw)
        AGENT.last.rest()
        if not transport.value().endswith(b"0\r\n\r\n"):
            raise RuntimeError(f"unexpected answer: {transport.value()[-400:]!r}")
        transport.clear()


def calls(service: GatewayService, raw: bytes, streams: int, frames: int) -> tuple[int, Any]:
    cProfile, pstats = _cprofile()
    AGENT.frames = frames
    run(service, raw, 3)
    prof = cProfile.Profile()
    prof.enable()
    run(service, raw, streams)
    prof.disable()
    stats = pstats.Stats(prof)
    return int(stats.total_calls), stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    sink = io.StringIO()
    globalLogBeginner.beginLoggingTo(
        [FileLogObserver(sink, _text_formatter())], redirectStandardIO=False
    )
    service = build()
    print("| stream | calls per frame | calls per request (1 frame) |")
    print("|---|--:|--:|")
    for name, (path, alias) in CASES.items():
        raw = request_bytes(path, alias)
        one, _ = calls(service, raw, args.streams, 1)
        many, stats = calls(service, raw, args.streams, args.frames)
        per_frame = (many - one) / args.streams / (args.frames - 1)
        print(f"| {name} | {per_frame:.1f} | {one / args.streams:.0f} |")
        if args.profile:
            stats.stream = sys.stdout
            stats.sort_stats("ncalls").print_stats(25)


if __name__ == "__main__":
    main()
