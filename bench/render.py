"""How long ``/metrics``, ``/health`` and ``/v1/models`` take to render as the config grows.

    python bench/render.py [--sizes 10,100,1000] [--per-alias 4] [--renders 200]
                           [--skip inprocess,http,workers] [--workers 2]

For each size N (deployments, ``--per-alias`` of them per alias, all ``mock/`` so no
upstream is needed), after a few requests per deployment (so every label set exists):

- **in-process**: the service's resource tree on a memory reactor, each GET fed as raw
  bytes to a server protocol over a memory transport that keeps what is written
  uncopied; the time is from the request's bytes to the answer handed to the transport
  (HTTP parsing included, no network);
- **http**: a real ``twistd -n gateway`` daemon on loopback, timed from the client
  (one keep-alive connection, the answer read whole);
- **workers**: the same with ``--workers N``: ``/metrics`` is then the sum over the
  workers' shared files (:mod:`gatewayd.observability.metric_merge`), read at every scrape
  (``bench/render_workers.py`` times that merge in one process, without HTTP).

Prints a markdown table: p50 / p99 milliseconds and the answer's size. Timing belongs
here, never in a test.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import yaml
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from gatewayd.config import parse_config
from gatewayd.daemon.gc_tuning import freeze_startup_heap
from gatewayd.service import GatewayService
from gatewayd.testing import GatewayProcess

MASTER = "sk-render-bench"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
#: (label, path, Accept header)
PATHS = [
    ("/metrics", "/metrics", None),
    ("/metrics (OpenMetrics)", "/metrics", OPENMETRICS),
    ("/health", "/health", None),
    ("/health/readiness", "/health/readiness", None),
    ("/health/liveliness", "/health/liveliness", None),
    ("/v1/models", "/v1/models", None),
]
BODY = b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}'


def config(n: int, per_alias: int) -> dict[str, object]:
    """``n`` mock deployments, ``per_alias`` per alias, each with its own id."""
    entries = [
        {
            "model_name": f"alias-{i // per_alias}",
            "litellm_params": {"model": f"mock/m{i}", "mock_response": "ok"},
            "model_info": {"id": f"dep-{i}"},
        }
        for i in range(n)
    ]
    return {"model_list": entries, "general_settings": {"master_key": MASTER}}


def aliases(n: int, per_alias: int) -> list[str]:
    return [f"alias-{a}" for a in range((n + per_alias - 1) // per_alias)]


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p99_ms: float
    size: int


def summarise(samples: list[float], size: int) -> Timing:
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return Timing(1000 * statistics.median(samples), 1000 * p99, size)


def get_bytes(path: str, accept: str | None) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {MASTER}\r\n"
    if accept:
        head += f"Accept: {accept}\r\n"
    return (head + "\r\n").encode()


def post_bytes(alias: str) -> bytes:
    body = BODY % alias.encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + MASTER.encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


# -- in-process -----------------------------------------------------------------------


class Sink(StringTransport):
    """Keeps the chunks written, uncopied (a socket sends them; BytesIO would copy 3 MB)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def writeSequence(self, seq: Iterable[bytes]) -> None:
        self.chunks += seq

    def value(self) -> bytes:
        return b"".join(self.chunks)


class InProcess:
    """A :class:`GatewayService` on a memory reactor, driven through its site."""

    def __init__(self, n: int, per_alias: int) -> None:
        self.clock = MemoryReactorClock()
        cfg = parse_config(yaml.safe_dump(config(n, per_alias)))
        self.service = GatewayService(cfg, "tcp:0", reactor=self.clock, handle_sighup=False)
        self.service._ready = True  # as once listening
        self.site = self.service.site
        self.site.timeOut = None
        self.keep = True  # the answer is kept (checked) except while timing

    def exchange(self, data: bytes) -> bytes:
        proto = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert proto is not None
        transport = Sink()
        proto.makeConnection(transport)
        proto.dataReceived(data)
        self.clock.advance(0)
        out = transport.value() if self.keep else b""
        proto.connectionLost(None)
        return out

    def traffic(self, names: list[str], rounds: int) -> None:
        for _ in range(rounds):
            for alias in names:
                answer = self.exchange(post_bytes(alias))
                if not answer.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(answer[:500].decode("latin-1"))

    def time(self, path: str, accept: str | None, renders: int) -> Timing:
        data = get_bytes(path, accept)
        answer = self.exchange(data)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(answer[:500].decode("latin-1"))
        samples = []
        self.keep = False
        for _ in range(renders):
            t0 = time.perf_counter()
            self.exchange(data)
            samples.append(time.perf_counter() - t0)
        self.keep = True
        return summarise(samples, len(answer))


# -- over HTTP ------------------------------------------------------------------------


class OverHTTP:
    """A real daemon; one keep-alive client connection."""

    def __init__(self, n: int, per_alias: int, workers: int) -> None:
        extra = ["--workers", str(workers)] if workers > 1 else []
        self.proc = GatewayProcess(config(n, per_alias), extra_args=extra, startup_timeout=120)
        self.proc.start()
        if workers > 1:  # readiness answers from the first worker up: wait for them all
            deadline = time.monotonic() + 60
            while "workers listening" not in self.proc.log():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers not ready:\n{self.proc.log()[-3000:]}")
                time.sleep(0.1)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.proc.port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None, accept: str | None) -> bytes:
        headers = {"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"}
        if accept:
            headers["Accept"] = accept
        self.conn.request(method, path, body, headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
        return data

    def traffic(self, names: list[str], rounds: int) -> None:
        for _ in range(rounds):
            for alias in names:
                self.request("POST", "/v1/chat/completions", BODY % alias.encode(), None)

    def time(self, path: str, accept: str | None, renders: int) -> Timing:
        size = len(self.request("GET", path, None, accept))
        samples = []
        for _ in range(renders):
            t0 = time.perf_counter()
            self.request("GET", path, None, accept)
            samples.append(time.perf_counter() - t0)
        return summarise(samples, size)

    def close(self) -> None:
        self.conn.close()
        self.proc.stop()


def measure(
    name: str,
    make: Callable[[], InProcess | OverHTTP],
    n: int,
    args: argparse.Namespace,
    rows: list[tuple[str, int, str, Timing]],
) -> None:
    target = make()
    try:
        names = aliases(n, args.per_alias)
        target.traffic(names, args.per_alias * args.requests)
        if isinstance(target, InProcess):
            freeze_startup_heap()  # as the daemon does once running
        for label, path, accept in PATHS:
            t = target.time(path, accept, args.renders)
            rows.append((name, n, label, t))
            print(f"  {name} n={n} {label}: {t.p50_ms:.3f} / {t.p99_ms:.3f} ms", flush=True)
    finally:
        if isinstance(target, OverHTTP):
            target.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10,100,1000", help="deployment counts")
    ap.add_argument("--per-alias", type=int, default=4, help="deployments per alias")
    ap.add_argument("--requests", type=int, default=3, help="requests per deployment first")
    ap.add_argument("--renders", type=int, default=200, help="timed renders per path")
    ap.add_argument("--workers", type=int, default=2, help="N for the workers rows")
    ap.add_argument("--skip", default="", help="comma-separated: inprocess,http,workers")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    rows: list[tuple[str, int, str, Timing]] = []
    per = args.per_alias
    for n in (int(s) for s in args.sizes.split(",")):
        if "inprocess" not in skip:
            measure("in-process", partial(InProcess, n, per), n, args, rows)
        if "http" not in skip:
            measure("http", partial(OverHTTP, n, per, 1), n, args, rows)
        if "workers" not in skip:
            name = f"http, {args.workers} workers"
            measure(name, partial(OverHTTP, n, per, args.workers), n, args, rows)
    print()
    print("| where | deployments | path | p50 ms | p99 ms | bytes |")
    print("|---|--:|---|--:|--:|--:|")
    for name, n, label, t in rows:
        print(f"| {name} | {n} | {label} | {t.p50_ms:.3f} | {t.p99_ms:.3f} | {t.size} |")
    print(f"\n{args.renders} renders per row, after {args.requests} requests per deployment.")


if __name__ == "__main__":
    main()
