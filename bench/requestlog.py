"""The request log's cost, and the Requests page's speed at a million rows.

    python bench/requestlog.py [--requests 5000] [--rows 1000000]

1. CPU per request with the request log off, in memory (the ring) and in SQLite (WAL,
   the writer thread's CPU included: process CPU time, waited until the queue is
   drained), for a JSON and a 20-chunk streamed chat request, through the real service
   in one process (bench/inprocess.py's harness: no sockets, an upstream that answers
   at once, so the log's share is as large as it can be). Best of ``--rounds``
   interleaved rounds each (the machine's noise only ever adds).
2. The same on the real daemon (twistd, sockets, the mock provider): its process CPU
   per request from /proc, the writer thread's included.
3. ``GET /ui/api/requests`` queries (the store's query functions, as the API runs
   them) on a SQLite log of ``--rows`` rows: the first page, filtered pages, a page
   deep in the list through the keyset cursor, and the Keys page's spend per day.
Prints three markdown tables.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from compare import config
from inprocess import _InstantAgent, request_bytes, run
from twisted.logger import FileLogObserver, globalLogBeginner

from gatewayd.config import parse_config
from gatewayd.observability.log import _text_formatter
from gatewayd.requestlog import RequestQuery, RequestRow
from gatewayd.requestlog.sqlite_store import SCHEMA, SQLiteLog
from gatewayd.service import GatewayService
from gatewayd.upstream import http as provider_http


def service(request_log: dict[str, Any] | None) -> GatewayService:
    doc: Any = config(9)
    if request_log is not None:
        doc["general_settings"]["request_log"] = request_log
        doc["general_settings"]["ui"] = True
    provider_http.UpstreamAgents.agent_for = lambda self, url, tls=None: _InstantAgent()  # type: ignore[method-assign]
    return GatewayService(parse_config(json.dumps(doc)), "tcp:0")


def drained(svc: GatewayService) -> None:
    store = getattr(svc.request_log, "store", None)
    q = getattr(store, "queue", None)
    if q is None:
        return
    deadline = time.monotonic() + 30
    while not q.empty() and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.05)  # the last batch's commit


def cpu(svc: GatewayService, raw: bytes, n: int, wanted: bytes) -> float:
    started = time.process_time()
    per = run(svc, raw, n, wanted)
    drained(svc)
    total = time.process_time() - started
    return max(per, total / n * 1e6)


def cost_table(n: int, rounds: int) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="gatewayd-bench-rl-"))
    variants = {
        "off": service(None),
        "memory ring": service({}),
        "sqlite": service({"path": str(tmp / "log.db"), "queue_size": 1_000_000}),
    }
    cases = [
        ("json", request_bytes("plain", False), b"chat.completion"),
        ("stream", request_bytes("sse", True), b"[DONE]"),
    ]
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for name, svc in variants.items():
            for case, raw, wanted in cases:
                us = cpu(svc, raw, n, wanted)
                key = (name, case)
                best[key] = min(best.get(key, us), us)
    lines = [
        "| request log | JSON µs/req | vs off | stream µs/req | vs off |",
        "|---|---|---|---|---|",
    ]
    for name in variants:
        j, s = best[(name, "json")], best[(name, "stream")]
        lines.append(
            f"| {name} | {j:.0f} | {j / best[('off', 'json')]:.3f}x | {s:.0f} | "
            f"{s / best[('off', 'stream')]:.3f}x |"
        )
    for svc in variants.values():
        if svc.request_log is not None:
            svc.request_log.close()
    return "\n".join(lines)


def daemon_cpu(n: int, rounds: int, only: dict[str, dict[str, Any]] | None = None) -> str:
    """The real daemon (twistd, sockets) answering from the mock provider: its process
    CPU (utime + stime from /proc, writer thread included) per request, one keep-alive
    connection, log off / ring / SQLite, started one after the other."""
    import http.client
    import os

    from gatewayd.testing import GatewayProcess

    tmp = Path(tempfile.mkdtemp(prefix="gatewayd-bench-rl-"))
    tick = os.sysconf("SC_CLK_TCK")
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "Hi"}]})
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench-master"}

    def cpu_seconds(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    variants: dict[str, dict[str, Any]] = {
        "off": {"ui": False},
        "memory ring": {"ui": True},
        "sqlite": {"ui": True, "request_log": {"path": str(tmp / "d.db"), "queue_size": 100000}},
    }
    if only is not None:
        variants = only
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, general in variants.items():
            cfg = {
                "model_list": [
                    {
                        "model_name": "demo",
                        "params": {"model": "mock/demo", "mock_response": "Hello"},
                    }
                ],
                "general_settings": {
                    "master_key": "sk-bench-master",
                    "access_log": False,
                    **general,
                },
            }
            with GatewayProcess(cfg) as gw:
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
                for _ in range(200):  # warm up
                    conn.request("POST", "/v1/chat/completions", body, headers)
                    conn.getresponse().read()
                before = cpu_seconds(gw.pid)
                for _ in range(n):
                    conn.request("POST", "/v1/chat/completions", body, headers)
                    conn.getresponse().read()
                time.sleep(1.2)  # the writer's last batch (its CPU counted)
                used = cpu_seconds(gw.pid) - before
                conn.close()
            us = used / n * 1e6
            best[name] = min(best.get(name, us), us)
    lines = ["| request log | daemon CPU µs/req | vs off |", "|---|---|---|"]
    for name in variants:
        lines.append(f"| {name} | {best[name]:.0f} | {best[name] / best['off']:.3f}x |")
    return "\n".join(lines)


def fill(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    for s in SCHEMA:
        conn.execute(s)
    rnd = random.Random(7)
    now = time.time()
    keys = [f"team-{i}" for i in range(50)]
    aliases = [f"alias-{i}" for i in range(20)]
    cols = RequestRow.__dataclass_fields__.keys()
    insert = f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"

    def gen(start: int, count: int) -> Any:
        for i in range(start, start + count):
            alias = aliases[i % 20]
            yield RequestRow(
                ts=now - (rows - i) * (30 * 86400 / rows),
                request_id=f"req-{i}",
                key=keys[rnd.randrange(50)],
                alias=alias,
                deployment=f"{alias}-dep-{i % 3}",
                dialect=("chat", "messages", "responses")[i % 3],
                endpoint="/v1/chat/completions",
                status=200 if rnd.random() > 0.02 else rnd.choice((429, 500, 502)),
                attempts=1,
                fallback=None,
                latency_ms=rnd.uniform(50, 3000),
                ttft_ms=None,
                prompt_tokens=rnd.randrange(10, 2000),
                completion_tokens=rnd.randrange(10, 800),
                cost_usd=rnd.uniform(0, 0.05),
                cached=False,
                stream=bool(i % 2),
                outcome=None,
            ).as_tuple()

    for start in range(0, rows, 100_000):
        with conn:
            conn.executemany(insert, gen(start, min(100_000, rows - start)))
    with conn:  # what the writer adds up batch by batch
        conn.execute(
            "INSERT INTO spend_daily SELECT key, date(ts, 'unixepoch'), SUM(cost_usd), "
            "COUNT(*), SUM(prompt_tokens + completion_tokens) FROM requests GROUP BY 1, 2"
        )
    conn.close()


def timed(f: Any, *args: Any) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(3):
        t = time.perf_counter()
        out = f(*args)
        best = min(best, time.perf_counter() - t)
    return best * 1000.0, out


def query_table(rows: int) -> str:
    tmp = Path(tempfile.mkdtemp(prefix="gatewayd-bench-rl-"))
    path = tmp / "big.db"
    t = time.perf_counter()
    fill(path, rows)
    filled = time.perf_counter() - t
    store = SQLiteLog.__new__(SQLiteLog)  # the query side only: no writer thread
    store.path = str(path)
    lines = [
        f"{rows:,} rows (filled in {filled:.0f} s)",
        "",
        "| query | ms (best of 3) | rows |",
        "|---|---|---|",
    ]
    cases: list[tuple[str, dict[str, str]]] = [
        ("first page (50)", {}),
        ("key=team-7", {"key": "team-7"}),
        ("alias + deployment", {"alias": "alias-3", "deployment": "alias-3-dep-0"}),
        ("status=5xx", {"status": "5xx"}),
        ("status=429", {"status": "429"}),
        ("dialect=messages, cached=false", {"dialect": "messages", "cached": "false"}),
        ("last 24 h, key=team-3", {"since": str(time.time() - 86400), "key": "team-3"}),
    ]
    for label, args in cases:
        ms, page = timed(store._query, RequestQuery.from_args(args))
        lines.append(f"| {label} | {ms:.2f} | {len(page['rows'])} |")
    # 200 pages down through the cursor, then one more page timed.
    q = RequestQuery.from_args({"limit": "500"})
    page = store._query(q)
    for _ in range(20):
        page = store._query(RequestQuery.from_args({"limit": "500", "before": page["next"]}))
    ms, deep = timed(store._query, RequestQuery.from_args({"before": page["next"]}))
    lines.append(f"| page after 10,500 rows (cursor) | {ms:.2f} | {len(deep['rows'])} |")
    ms, _ = timed(store._get, deep["rows"][0]["id"])
    lines.append(f"| one request's detail | {ms:.2f} | 1 |")
    ms, spend = timed(store._spend, 30)
    lines.append(f"| Keys page: spend per key per day, 30 days | {ms:.0f} | {len(spend)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the best counts")
    args = ap.parse_args()
    globalLogBeginner.beginLoggingTo(
        [FileLogObserver(io.StringIO(), _text_formatter())], redirectStandardIO=False
    )
    print("## CPU per request (in-process service)\n")
    print(cost_table(args.requests, args.rounds))
    print("\n## CPU per request (the real daemon, mock provider, one keep-alive client)\n")
    print(daemon_cpu(args.requests, max(1, args.rounds // 2)))
    print("\n## Requests page queries\n")
    print(query_table(args.rows))


if __name__ == "__main__":
    main()
