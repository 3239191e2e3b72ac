"""The request log's parts in process: the bounded queue, an unwritable path, retention,
keyset paging on indexes, redaction, and the console's session cookie."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config.keys import ClientKey, KeyTable, digest
from gatewayd.config.model import GatewayConfig, GeneralSettings
from gatewayd.config.request_log import RequestLogSettings
from gatewayd.console.session import Admin, csrf_token, issue, verify
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.requestlog import RequestLog
from gatewayd.requestlog.redact import REDACTED, Redactor
from gatewayd.requestlog.ring import MemoryLog
from gatewayd.requestlog.row import COLUMNS, Page, Query, Row, parse_query
from gatewayd.requestlog.sqlite_log import _INSERT, SQLiteLog, connect, prune, run_query


class ThreadReactor:
    """Enough of a reactor for the writer thread: calls from it are run under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        with self.lock:
            f(*args)


def row(ts: float, status: int = 200, alias: str = "a", key: str | None = "k") -> Row:
    values: dict[str, Any] = dict.fromkeys(COLUMNS)
    values.update(
        ts=ts,
        request_id="r",
        key_name=key,
        alias=alias,
        deployment="d1",
        dialect="chat",
        endpoint="chat/completions",
        status=status,
        attempts=1,
        latency_ms=1.0,
        cost_usd=0.5,
        cached=0,
        stream=0,
    )
    return tuple(values[c] for c in COLUMNS)


def wait(pred: Callable[[], bool], limit: float = 10.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


def stop_thread(log: SQLiteLog) -> None:
    thread = log._thread
    log.stop_now()
    assert thread is None or not thread.is_alive()


def test_full_queue_drops_and_counts_never_waits(tmp_path: Path) -> None:
    metrics = GatewayMetrics()
    log = RequestLog(
        RequestLogSettings(path=str(tmp_path / "r.db")), ThreadReactor(), metrics, queue_size=3
    )
    # The writer is not started: nothing drains the queue.
    started = time.monotonic()
    for i in range(10):
        log.add(row(time.time() + i), "a", "d1", 200, 1.0, None)
    assert time.monotonic() - started < 1.0  # never waited for room
    pieces, _ = metrics.pieces(None)
    text = b"".join(pieces).decode()
    assert 'gatewayd_request_log_dropped_total{reason="queue_full"} 7.0' in text
    # The live numbers count every request, written or not.
    assert sum(b.requests for b in log.stats.total.buckets) == 10


def test_unwritable_path_loses_rows_counted_and_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    dropped: list[tuple[str, int]] = []
    log = SQLiteLog(
        str(blocker / "sub" / "r.db"), ThreadReactor(), lambda r, n: dropped.append((r, n))
    )
    log.start()
    try:
        for i in range(5):
            log.add(row(time.time() + i))  # no exception reaches the caller
        assert wait(lambda: sum(n for r, n in dropped if r == "write_error") == 5), dropped
    finally:
        stop_thread(log)


def test_writer_batches_and_prunes_by_age_and_count(tmp_path: Path) -> None:
    path = str(tmp_path / "r.db")
    dropped: list[tuple[str, int]] = []
    log = SQLiteLog(
        path, ThreadReactor(), lambda r, n: dropped.append((r, n)), retention_days=1, max_rows=3
    )
    now = time.time()
    log.add(row(now - 3 * 86400))  # past retention
    for i in range(5):
        log.add(row(now + i))
    log.start()  # the first batch is written, then pruned
    stop_thread(log)
    conn = sqlite3.connect(path)
    stamps = [r[0] for r in conn.execute("SELECT ts FROM requests ORDER BY id")]
    assert stamps == [now + 2, now + 3, now + 4]
    assert dropped == []


def test_prune_by_age_alone(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "r.db"))
    now = time.time()
    conn.execute("BEGIN")
    conn.executemany(_INSERT, [row(now - 10 * 86400), row(now - 8 * 86400), row(now - 60)])
    conn.execute("COMMIT")
    assert prune(conn, now, 7, 0) == 2
    assert prune(conn, now, 0, 0) == 0  # 0: kept forever
    assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1


def fill(conn: sqlite3.Connection, rows: list[Row]) -> None:
    conn.execute("BEGIN")
    conn.executemany(_INSERT, rows)
    conn.execute("COMMIT")


def test_keyset_paging_with_filters_matches_the_ring(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "r.db"))
    ring = MemoryLog(1000)
    rows = [row(1000.0 + i, 500 if i % 3 == 0 else 200, "a" if i % 2 else "b") for i in range(100)]
    fill(conn, rows)
    for r in rows:
        ring.add(r)
    q = Query(equal=(("status", 500), ("alias", "a")), limit=4)
    seen_sql: list[int] = []
    seen_ring: list[int] = []
    before: int | None = None
    while True:
        page = run_query(conn, Query(q.equal, limit=4, before=before))
        ring_pages: list[Page] = []
        ring.query(Query(q.equal, limit=4, before=before)).addCallback(ring_pages.append)
        assert [r["id"] for r in page.rows] == [r["id"] for r in ring_pages[0].rows]
        seen_sql += [r["id"] for r in page.rows]
        seen_ring += [r["id"] for r in ring_pages[0].rows]
        before = page.next_before
        if before is None:
            break
    want = [i + 1 for i in range(100) if i % 3 == 0 and i % 2][::-1]
    assert seen_sql == want == seen_ring
    for listed in page.rows:
        assert "request_body" not in listed  # bodies only in a row's detail
    # Time range: [since, until)
    page = run_query(conn, Query(since=1010.0, until=1013.0))
    assert [r["ts"] for r in page.rows] == [1012.0, 1011.0, 1010.0]


@pytest.mark.parametrize("column", ["key_name", "alias", "deployment", "status", "cached"])
def test_each_filter_pages_on_an_index(tmp_path: Path, column: str) -> None:
    conn = connect(str(tmp_path / "r.db"))
    plan = " ".join(
        str(r[-1])
        for r in conn.execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM requests WHERE {column} = ? AND id < ? "
            "ORDER BY id DESC LIMIT 51",
            (1, 10),
        )
    )
    assert f"requests_{column}" in plan, plan
    assert "TEMP B-TREE" not in plan, plan  # no sort: the index gives the order


def test_parse_query_reads_filters_and_refuses_bad_ones() -> None:
    q = parse_query(
        {b"key": [b"alice"], b"status": [b"429"], b"cached": [b"true"], b"before": [b"77"]}
    )
    assert dict(q.equal) == {"key_name": "alice", "status": 429, "cached": 1}
    assert q.before == 77
    with pytest.raises(ValueError, match="status"):
        parse_query({b"status": [b"abc"]})
    with pytest.raises(ValueError, match="since"):
        parse_query({b"since": [b"yesterday"]})
    assert parse_query({b"limit": [b"100000"]}).limit == 500


def test_redaction_of_stored_bodies() -> None:
    r = Redactor(["upstream-secret-value"])
    body = {
        "messages": [{"role": "user", "content": "my key is sk-abcdefghijklmnop, ok"}],
        "api_key": "anything",
        "max_tokens": 12,
        "metadata": {"Authorization": "Bearer abc.def.ghi.jkl", "note": "upstream-secret-value"},
    }
    text = r.body(body)
    assert text is not None
    assert "sk-abcdefghijklmnop" not in text and "anything" not in text
    assert "upstream-secret-value" not in text and "abc.def" not in text
    assert '"max_tokens": 12' in text and REDACTED in text


def config_with(master: str | None, keys: tuple[ClientKey, ...]) -> GatewayConfig:
    return GatewayConfig(
        deployments=(), general=GeneralSettings(master_key=master), keys=KeyTable(keys)
    )


def test_session_cookie_is_signed_expires_and_dies_with_its_key() -> None:
    admin_key = ClientKey(name="ops", digest=digest("sk-ops"), admin=True)
    config = config_with("sk-master", (admin_key,))
    now = 1_000_000.0
    token = issue(config, Admin(admin_key), now)
    assert b"sk-ops" not in token and b"sk-master" not in token
    who = verify(config, token, now + 60)
    assert who is not None and who.name == "ops" and who.by_cookie
    assert csrf_token(config, who) and csrf_token(config, Admin(admin_key)) == ""
    assert verify(config, token, now + 13 * 3600) is None  # expired
    forged = token.replace(b".k.", b".m.")
    assert verify(config, forged, now) is None
    tampered = token[:-1] + (b"0" if token[-1:] != b"0" else b"1")
    assert verify(config, tampered, now) is None
    # The key no longer admin (or gone): the cookie is worthless.
    demoted = config_with("sk-master", (ClientKey(name="ops", digest=digest("sk-ops")),))
    assert verify(demoted, token, now) is None
    master = issue(config, Admin(None), now)
    assert verify(config, master, now) is not None
    assert verify(config_with("sk-other", ()), master, now) is None  # master key changed
