"""The request log's store: keyset paging and filters, the full queue (dropped and
counted, never waited for), an unwritable path, retention by age and by row count."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gatewayd.requestlog import RequestQuery, RequestRow
from gatewayd.requestlog.query import QueryError
from gatewayd.requestlog.ring import RingLog
from gatewayd.requestlog.sqlite_store import SCHEMA, SQLiteLog, retain


class ThreadReactor:
    """What the store asks of the reactor: callFromThread (run at once here) and a
    thread pool for queries (not used: the tests call the query functions directly)."""

    def callFromThread(self, f: Any, *a: Any, **kw: Any) -> None:
        f(*a, **kw)


def row(i: int, ts: float | None = None, **kw: Any) -> RequestRow:
    base: dict[str, Any] = dict(
        ts=time.time() if ts is None else ts,
        request_id=f"req-{i}",
        key="team-a" if i % 2 else "team-b",
        alias="gpt",
        deployment="dep-1",
        dialect="chat",
        endpoint="/v1/chat/completions",
        status=200 if i % 5 else 502,
        attempts=1,
        fallback=None,
        latency_ms=12.5,
        ttft_ms=None,
        prompt_tokens=3,
        completion_tokens=4,
        cost_usd=0.001,
        cached=False,
        stream=False,
        outcome=None,
    )
    base.update(kw)
    return RequestRow(**base)


def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def count(path: Path) -> int:
    """Rows in the log (0 while the writer has not made the table yet)."""
    with sqlite3.connect(path) as c:
        try:
            return int(c.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def test_rows_written_in_batches_and_paged_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    drops: list[tuple[str, int]] = []
    store = SQLiteLog(str(path), ThreadReactor(), lambda r, n: drops.append((r, n)))
    try:
        t0 = 1_700_000_000.0
        for i in range(120):
            store.add(row(i, ts=t0 + i))
        wait_until(lambda: path.exists() and count(path) == 120)
        first = store._query(RequestQuery(limit=50))
        assert [r["request_id"] for r in first["rows"][:2]] == ["req-119", "req-118"]
        assert first["next"] is not None
        second = store._query(RequestQuery.from_args({"before": first["next"], "limit": "50"}))
        assert second["rows"][0]["request_id"] == "req-69"
        third = store._query(RequestQuery.from_args({"before": second["next"], "limit": "50"}))
        assert len(third["rows"]) == 20 and third["next"] is None
        errors = store._query(RequestQuery.from_args({"status": "5xx", "key": "team-a"}))
        assert errors["rows"] and all(
            r["status"] == 502 and r["key"] == "team-a" for r in errors["rows"]
        )
        window = store._query(RequestQuery(since=t0 + 10, until=t0 + 20, limit=100))
        assert len(window["rows"]) == 10
        detail = store._get(first["rows"][0]["id"])
        assert detail is not None and detail["request_body"] is None
        assert drops == []
    finally:
        store.close()


def test_the_list_query_uses_an_index_not_a_scan(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "plan.db")
    for s in SCHEMA:
        conn.execute(s)
    for args in (
        {},
        {"key": "k"},
        {"alias": "a", "before": "5:3"},
        {"status": "429"},
        {"status": "5xx"},
    ):
        where, params = RequestQuery.from_args(args).sql()
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM requests{where} ORDER BY ts DESC, id DESC LIMIT 51",
            params,
        ).fetchall()
        text = " ".join(str(p[-1]) for p in plan)
        assert "INDEX" in text and "TEMP B-TREE" not in text, (args, text)


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    class Stalled(SQLiteLog):
        def _open(self) -> sqlite3.Connection:
            if threading.current_thread().name == "gatewayd-request-log":  # not the constructor
                entered.set()
                release.wait(10)
            return super()._open()

    path = tmp_path / "slow.db"
    drops: list[tuple[str, int]] = []
    store = Stalled(str(path), ThreadReactor(), lambda r, n: drops.append((r, n)), queue_size=5)
    try:
        store.add(row(0))
        assert entered.wait(10)  # the writer holds row 0 and is stuck on the disk
        started = time.monotonic()
        for i in range(1, 21):
            store.add(row(i))
        assert time.monotonic() - started < 1.0  # never waited for the writer
        assert sum(n for reason, n in drops if reason == "queue_full") == 15
        release.set()
        wait_until(lambda: path.exists() and count(path) == 6)
    finally:
        release.set()
        store.close()


def test_an_unwritable_path_drops_rows_and_counts_write_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    drops: list[tuple[str, int]] = []
    store = SQLiteLog(str(blocker / "log.db"), ThreadReactor(), lambda r, n: drops.append((r, n)))
    try:
        for i in range(3):
            store.add(row(i))  # never raises
        wait_until(lambda: sum(n for r, n in drops if r == "write_error") == 3)
    finally:
        store.close()


def test_retention_by_age_and_by_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for s in SCHEMA:
        conn.execute(s)
    now = time.time()
    cols = RequestRow.__dataclass_fields__.keys()
    insert = f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
    conn.executemany(insert, [row(i, ts=now - 40 * 86400).as_tuple() for i in range(10)])
    conn.executemany(insert, [row(i, ts=now - i).as_tuple() for i in range(30)])
    conn.commit()
    retain(conn, retention_days=30, max_rows=0)
    assert count(path) == 30
    retain(conn, retention_days=30, max_rows=25)
    assert count(path) == 25
    newest = conn.execute("SELECT MIN(ts) FROM requests").fetchone()[0]
    assert newest > now - 30  # the oldest went first
    conn.close()


def test_retention_runs_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "bg.db"
    store = SQLiteLog(str(path), ThreadReactor(), lambda r, n: None, retention_days=1)
    try:
        store.add(row(0, ts=time.time() - 3 * 86400))
        store.add(row(1))
        # The writer's first retention pass comes a second after it started.
        wait_until(lambda: path.exists() and count(path) == 1)
    finally:
        store.close()


def test_the_ring_keeps_the_newest_and_filters() -> None:
    ring = RingLog(10)
    for i in range(25):
        ring.add(row(i, ts=1000.0 + i))
    got: list[Any] = []
    ring.query(RequestQuery(limit=4)).addCallback(got.append)
    assert [r["request_id"] for r in got[0]["rows"]] == ["req-24", "req-23", "req-22", "req-21"]
    ring.query(RequestQuery.from_args({"before": got[0]["next"]})).addCallback(got.append)
    assert len(got[1]["rows"]) == 6 and got[1]["next"] is None


def test_bad_filters_are_named() -> None:
    with pytest.raises(QueryError, match="status"):
        RequestQuery.from_args({"status": "bad"})
    with pytest.raises(QueryError, match="since"):
        RequestQuery.from_args({"since": "yesterday"})
