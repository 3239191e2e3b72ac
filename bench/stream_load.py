"""The instruments of ``bench/streams.py``: a cheap streaming upstream and a client that
holds N streams open, each its own process (asyncio, one core between them).

    python bench/stream_load.py upstream --port P --rate 50 --frames 64
    python bench/stream_load.py client --port P --path /v1/chat/completions \
        --body '{"model": "sse", ...}' --streams 256 --duration 5

**The upstream** answers every POST with a chunked SSE stream of ``--frames`` content
frames, ``--rate`` a second, each stamped with its send time (``CLOCK_MONOTONIC`` in
nanoseconds, the same clock in every process of the machine) as its whole content
text, ``"t=<ns> "``. A path starting ``/anthropic`` gets Anthropic's Messages events
(text deltas); any other, OpenAI chat chunks ending with usage and ``[DONE]``. The
first frame leaves with the headers; the others are sent from one timing wheel with a
millisecond's slots (one timer for all the streams, not one per frame).

**The client** opens ``--streams`` keep-alive connections over ``--ramp`` seconds, each
posting ``--body`` and, when its stream ends, posting again (streams come and go), for
``--duration`` seconds. For every frame it reads, the delay from the stamp to the read;
for every stream, the time from sending the request to its first frame. It prints one
JSON line: frames, delays' percentiles, per-stream worst delays, first-frame times,
errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import sys
import time
from array import array
from typing import Any

now_ns = time.monotonic_ns

# -- the upstream ------------------------------------------------------------------------

_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_OPENAI = (
    b'data: {"id":"chatcmpl-b","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","choices":[{"index":0,"delta":{"content":"t=%d "},'
    b'"finish_reason":null}]}\n\n'
)
_OPENAI_END = (
    b'data: {"id":"chatcmpl-b","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"bench","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":%d,"total_tokens":%d}}\n\n'
    b"data: [DONE]\n\n"
)
_ANTHROPIC_START = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_b",'
    b'"type":"message","role":"assistant","model":"bench","content":[],"stop_reason":null,'
    b'"stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
)
_ANTHROPIC = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"t=%d "}}\n\n'
)
_ANTHROPIC_END = (
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    b'"stop_sequence":null},"usage":{"output_tokens":%d}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class _Stream:
    __slots__ = ("anthropic", "conn", "left")

    def __init__(self, conn: _UpstreamConn, anthropic: bool, frames: int) -> None:
        self.conn = conn
        self.anthropic = anthropic
        self.left = frames


class Wheel:
    """Every stream's next frame, in one-millisecond slots; one timer drives them all."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval_ms: int, frames: int) -> None:
        self.loop = loop
        self.interval = interval_ms
        self.frames = frames
        self.slots: dict[int, list[_Stream]] = {}
        self.tick = now_ns() // 1_000_000
        self.frames_sent = 0
        loop.call_soon(self._run)

    def add(self, stream: _Stream) -> None:
        due = now_ns() // 1_000_000 + self.interval
        self.slots.setdefault(due, []).append(stream)

    def _run(self) -> None:
        current = now_ns() // 1_000_000
        while self.tick <= current:
            due = self.slots.pop(self.tick, None)
            if due:
                self._send(due, self.tick + self.interval)
            self.tick += 1
        # Next millisecond (asyncio's timer is good to about that).
        self.loop.call_at(self.loop.time() + 0.001, self._run)

    def _send(self, streams: list[_Stream], next_due: int) -> None:
        later = self.slots.setdefault(next_due, [])
        for s in streams:
            transport = s.conn.transport
            if transport is None or transport.is_closing():
                continue
            s.left -= 1
            body = (_ANTHROPIC if s.anthropic else _OPENAI) % now_ns()
            self.frames_sent += 1
            if s.left <= 0:
                n = self.frames
                end = _ANTHROPIC_END % n if s.anthropic else _OPENAI_END % (n, n + 9)
                transport.write(_chunk(body) + _chunk(end) + b"0\r\n\r\n")
                s.conn.busy = False
            else:
                transport.write(_chunk(body))
                later.append(s)


class _UpstreamConn(asyncio.Protocol):
    def __init__(self, wheel: Wheel) -> None:
        self.wheel = wheel
        self.buf = b""
        self.transport: Any = None
        self.busy = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            path = head.split(b" ", 2)[1]
            self.buf = self.buf[end + 4 + length :]
            self._answer(path.startswith(b"/anthropic"))

    def _answer(self, anthropic: bool) -> None:
        stream = _Stream(self, anthropic, self.wheel.frames)
        first = (_ANTHROPIC_START + _ANTHROPIC if anthropic else _OPENAI) % now_ns()
        stream.left -= 1
        self.wheel.frames_sent += 1
        self.busy = True
        self.transport.write(_HEAD + _chunk(first))
        self.wheel.add(stream)


async def upstream(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    wheel = Wheel(loop, round(1000 / args.rate), args.frames)
    server = await loop.create_server(
        lambda: _UpstreamConn(wheel), "127.0.0.1", args.port, backlog=8192
    )
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


# -- the client --------------------------------------------------------------------------

#: A frame's stamp: a JSON string that is one stamp alone (a final event repeating the
#: whole text, as Responses' ``response.completed`` does, has several in one string).
_STAMP = re.compile(rb':"t=(\d+) "')


class Results:
    def __init__(self) -> None:
        self.delays = array("d")  # ms, every frame
        self.first = array("d")  # ms, request sent -> first frame
        self.worst: list[float] = []  # ms, every finished stream's worst frame
        self.frames = 0
        self.streams = 0
        self.errors: list[str] = []
        self.measuring = False


class _ClientConn(asyncio.Protocol):
    def __init__(self, run: ClientRun) -> None:
        self.run = run
        self.transport: Any = None
        self.sent = 0
        self.got_first = False
        self.worst = 0.0
        self.tail = b""
        self.frames = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.run.conns.append(self)
        self.send()

    def send(self) -> None:
        self.sent = now_ns()
        self.got_first = False
        self.worst = 0.0
        self.tail = b""
        self.frames = 0
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        arrived = now_ns()
        r = self.run.results
        stamps = _STAMP.findall(data)
        if stamps:
            if not self.got_first:
                self.got_first = True
                if r.measuring:
                    r.first.append((arrived - self.sent) / 1e6)
            self.frames += len(stamps)
            if r.measuring:
                r.frames += len(stamps)
                for s in stamps:
                    d = (arrived - int(s)) / 1e6
                    r.delays.append(d)
                    if d > self.worst:
                        self.worst = d
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 200"):
            r.errors.append(data[:200].decode("latin-1"))
        self.tail = (self.tail + data)[-16:]
        if self.tail.endswith(b"\r\n0\r\n\r\n"):
            if r.measuring:
                r.streams += 1
                r.worst.append(self.worst)
            if self.frames < self.run.frames:
                r.errors.append(f"a stream ended after {self.frames} frames")
            if self.run.going:
                self.send()
            else:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.run.going:
            self.run.results.errors.append(f"connection lost: {exc}")


class ClientRun:
    def __init__(self, args: argparse.Namespace) -> None:
        body = args.body.encode()
        self.request = (
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nx-api-key: %s\r\nanthropic-version: 2023-06-01\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (args.path.encode(), args.key.encode(), args.key.encode(), len(body), body)
        )
        self.frames = args.frames
        self.results = Results()
        self.going = True
        self.conns: list[_ClientConn] = []


async def client(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    run = ClientRun(args)
    r = run.results
    conns: list[Any] = []
    started = time.monotonic()
    r.measuring = True  # the ramp's first frames count: the burst is what is measured
    for i in range(args.streams):
        at = started + args.ramp * i / args.streams
        pause = at - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        try:
            transport, _ = await loop.create_connection(
                lambda: _ClientConn(run), "127.0.0.1", args.port
            )
            conns.append(transport)
        except OSError as e:
            r.errors.append(f"connect: {e}")
    opened = time.monotonic()
    await asyncio.sleep(max(0.0, started + args.duration - time.monotonic()))
    r.measuring = False
    run.going = False
    took = time.monotonic() - started
    for t in conns:
        t.close()
    r.worst.extend(c.worst for c in run.conns if c.frames)  # the streams still open
    d = sorted(r.delays)
    f = sorted(r.first)
    w = sorted(r.worst)

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")

    out = {
        "seconds": took,
        "ramp_seconds": opened - started,
        "frames": r.frames,
        "streams_finished": r.streams,
        "delay_ms": [pct(d, 0.5), pct(d, 0.99), d[-1] if d else float("nan")],
        "first_ms": [pct(f, 0.5), pct(f, 0.99)],
        "worst_stream_ms": [pct(w, 0.5), w[-1] if w else float("nan")],
        "errors": len(r.errors),
        "error_sample": r.errors[:3],
    }
    print(json.dumps(out), flush=True)


def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="role", required=True)
    up = sub.add_parser("upstream")
    up.add_argument("--port", type=int, required=True)
    up.add_argument("--rate", type=float, default=50.0, help="frames per second per stream")
    up.add_argument("--frames", type=int, default=64)
    cl = sub.add_parser("client")
    cl.add_argument("--port", type=int, required=True)
    cl.add_argument("--path", default="/v1/chat/completions")
    cl.add_argument("--body", required=True)
    cl.add_argument("--key", default="none")
    cl.add_argument("--streams", type=int, default=256)
    cl.add_argument("--frames", type=int, default=64)
    cl.add_argument("--duration", type=float, default=5.0)
    cl.add_argument("--ramp", type=float, default=1.0, help="seconds to open the streams")
    args = ap.parse_args()
    try:
        asyncio.run(upstream(args) if args.role == "upstream" else client(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
