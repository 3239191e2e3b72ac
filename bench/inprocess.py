"""gatewayd's own CPU per request, without sockets or an upstream: the real service (the
resource tree, auth, routing with retries armed, metrics, the access log into a
discarded stream) driven in one process through Twisted's in-memory transport, with an
upstream agent that answers at once. What is left out is the network and the upstream
HTTP client; what is measured is everything gatewayd adds on top of them.

    python bench/inprocess.py [--requests 20000] [--profile]

Prints microseconds of process CPU per request for a non-streamed and a 20-chunk
streamed chat request (best of three rounds; the median of several runs is what to
compare between two versions of the code). ``--profile`` prints cProfile's top
functions instead (calls per request and own time).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from compare import config
from harness import MASTER_KEY, chat_answer, stream_answer
from twisted.internet.defer import succeed
from twisted.internet.testing import StringTransport
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

FIXED_ANSWER = chat_answer().encode()
FIXED_STREAM = stream_answer().replace("\\n", "\n").encode()  # nginx's escapes undone


class _Response:
    def __init__(self, body: bytes, ctype: bytes) -> None:
        self.code = 200
        self.phrase = b"OK"
        self.version = (b"HTTP", 1, 1)
        self.headers = Headers({b"content-type": [ctype], b"content-length": [b"%d" % len(body)]})
        self.length = len(body)
        self._body = body

    def deliverBody(self, protocol: Any) -> None:
        protocol.makeConnection(_Transport())
        protocol.dataReceived(self._body)
        protocol.connectionLost(Failure(ResponseDone()))


class _Transport:
    def pauseProducing(self) -> None: ...

    def resumeProducing(self) -> None: ...

    def stopProducing(self) -> None: ...


@implementer(IAgent)
class _InstantAgent:
    """Answers every request at once: the JSON answer, or the SSE stream for ``/sse``."""

    def request(self, method: bytes, uri: bytes, headers: Any = None, body: Any = None) -> Any:
        if b"/sse/" in uri:
            return succeed(_Response(FIXED_STREAM, b"text/event-stream"))
        return succeed(_Response(FIXED_ANSWER, b"application/json"))


def build() -> GatewayService:
    """The service on bench/compare.py's config (its upstream port never dialled)."""
    doc = config(9)
    provider_http.UpstreamAgents.agent_for = lambda self, url, tls=None: _InstantAgent()  # type: ignore[method-assign]
    return GatewayService(parse_config(json.dumps(doc)), "tcp:0")


def request_bytes(alias: str, stream: bool) -> bytes:
    body = json.dumps(
        {"model": alias, "messages": [{"role": "user", "content": "Say hello"}], "stream": stream}
    ).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:4000\r\n"
        b"Content-Type: application/json\r\nAuthorization: Bearer " + MASTER_KEY.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body


def run(service: GatewayService, raw: bytes, n: int, wanted: bytes) -> float:
    """Microseconds of process CPU per request, over ``n`` requests on one connection."""
    transport = StringTransport()
    channel = service.site.buildProtocol(None)
    channel.makeConnection(transport)
    channel.dataReceived(raw)
    if wanted not in transport.value():
        raise RuntimeError(f"unexpected answer: {transport.value()[:400]!r}")
    transport.clear()
    started = time.process_time()
    for _ in range(n):
        channel.dataReceived(raw)
        transport.clear()
    return (time.process_time() - started) / n * 1e6


def _cprofile() -> tuple[Any, Any]:
    """cProfile and pstats: bench/profile.py would shadow the standard library's
    ``profile``, which cProfile imports."""
    here = str(Path(__file__).resolve().parent)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    try:
        import cProfile
        import pstats
    finally:
        sys.path[:] = saved
    return cProfile, pstats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    sink = io.StringIO()
    globalLogBeginner.beginLoggingTo(
        [FileLogObserver(sink, _text_formatter())], redirectStandardIO=False
    )
    service = build()
    cases = [
        ("json", request_bytes("plain", False), b"chat.completion"),
        ("stream", request_bytes("sse", True), b"[DONE]"),
    ]
    if args.profile:
        cProfile, pstats = _cprofile()
        for name, raw, wanted in cases:
            prof = cProfile.Profile()
            prof.enable()
            run(service, raw, args.requests // 4, wanted)
            prof.disable()
            print(f"### {name}")
            stats = pstats.Stats(prof, stream=sys.stdout)
            stats.sort_stats("tottime").print_stats(
                int(os.environ.get("GATEWAYD_PROFILE_ROWS", "30"))
            )
        return
    print("| request | CPU us per request (best of 3) |")
    print("|---|--:|")
    for name, raw, wanted in cases:
        best = min(run(service, raw, args.requests, wanted) for _ in range(3))
        sink.seek(0)
        sink.truncate()
        print(f"| {name} | {best:.1f} |")


if __name__ == "__main__":
    main()
