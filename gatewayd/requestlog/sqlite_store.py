"""The request log in SQLite: one writer thread fed by a bounded queue, batched
inserts, WAL (readers never wait for the writer), retention in the same thread.

The request's side is :meth:`SQLiteLog.add`: a ``put_nowait`` on the queue. A full
queue drops the row (counted), a failing disk drops the batch (counted, logged once a
minute): neither ever reaches the request. Queries run in the reactor's thread pool on
their own read-only connection.

With ``--workers`` every worker opens the same file with its own writer: SQLite's WAL
serialises the writers (a batch holds the lock for a millisecond or two, and
``busy_timeout`` waits for it), so no rows have to cross processes and the workers
need no extra channel to the supervisor."""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from gatewayd.observability.log import get_logger
from gatewayd.requestlog.query import RequestQuery
from gatewayd.requestlog.ring import page
from gatewayd.requestlog.row import COLUMNS, SUMMARY, RequestRow, attempt_dicts

log = get_logger(__name__)

_TYPES = {
    "ts": "REAL NOT NULL",
    "status": "INTEGER",
    "attempts": "INTEGER",
    "latency_ms": "REAL",
    "ttft_ms": "REAL",
    "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER",
    "cost_usd": "REAL",
    "cached": "INTEGER",
    "stream": "INTEGER",
}
SCHEMA = [
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, "
    + ", ".join(f"{c} {_TYPES.get(c, 'TEXT')}" for c in COLUMNS)
    + ")",
    # Each index ends in ts (and the rowid, implicitly): newest-first keyset pages.
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
    "CREATE INDEX IF NOT EXISTS requests_key ON requests (key, ts)",
    "CREATE INDEX IF NOT EXISTS requests_alias ON requests (alias, ts)",
    "CREATE INDEX IF NOT EXISTS requests_deployment ON requests (deployment, ts)",
    "CREATE INDEX IF NOT EXISTS requests_status ON requests (status, ts)",
    # Spend per key per UTC day, added to with each batch: the Keys page reads it
    # without scanning the month's rows.
    "CREATE TABLE IF NOT EXISTS spend_daily (key TEXT NOT NULL, day TEXT NOT NULL, "
    "cost_usd REAL NOT NULL, requests INTEGER NOT NULL, tokens INTEGER NOT NULL, "
    "PRIMARY KEY (key, day))",
]
_ADD_SPEND = (
    "INSERT INTO spend_daily (key, day, cost_usd, requests, tokens) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (key, day) DO UPDATE SET cost_usd = cost_usd + excluded.cost_usd, "
    "requests = requests + excluded.requests, tokens = tokens + excluded.tokens"
)
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_SUMMARY = ", ".join(("id", *SUMMARY, "request_body IS NOT NULL OR response_body IS NOT NULL"))
_ATTEMPTS = COLUMNS.index("attempt_log")
#: Rows written per transaction at most.
BATCH = 5000
#: Seconds the writer waits after a batch that was not full, for rows to gather.
FLUSH_EVERY = 0.5
#: Seconds between two retention passes.
RETENTION_EVERY = 60.0
_STOP = object()


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


class SQLiteLog:
    """The request log at ``path`` (see the module docstring)."""

    def __init__(
        self,
        path: str,
        reactor: Any,
        dropped: Callable[[str, int], None],
        queue_size: int = 10_000,
        retention_days: float = 30.0,
        max_rows: int = 1_000_000,
    ) -> None:
        """``dropped(reason, n)``: called in the reactor's thread for rows lost
        (``queue_full`` or ``write_error``)."""
        self.path = path
        self.reactor = reactor
        self.dropped = dropped
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.queue: queue.Queue[Any] = queue.Queue(queue_size)
        self._put = self.queue.put_nowait
        self._full = queue.Full
        self._last_error = 0.0
        try:  # the table exists before the first query (the writer opens its own)
            self._open().close()
        except (sqlite3.Error, OSError) as e:
            log.error(
                "request log {path}: {error} (rows are dropped and counted until it works; "
                "requests are unaffected)",
                path=path,
                error=str(e),
            )
        self.thread = threading.Thread(target=self._run, name="gatewayd-request-log", daemon=True)
        self.thread.start()

    # -- the request's side (reactor thread) --------------------------------------

    def add(self, row: RequestRow) -> None:
        try:
            self._put(row)
        except self._full:
            self.dropped("queue_full", 1)

    # -- the writer thread ---------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        next_retention = time.monotonic() + 1.0
        get = self.queue.get
        while True:
            try:
                first = get(timeout=1.0)
            except queue.Empty:
                first = None
            if first is _STOP:
                break
            batch = [] if first is None else [first]
            stop = False
            while len(batch) < BATCH:
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
            try:
                if conn is None:
                    conn = self._open()
                if batch:
                    with conn:
                        conn.executemany(_INSERT, [values(r) for r in batch])
                        conn.executemany(_ADD_SPEND, spend_by_day(batch))
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + RETENTION_EVERY
                    retain(conn, self.retention_days, self.max_rows)
            except (sqlite3.Error, OSError) as e:
                self._failed(e, len(batch))
                if conn is not None:
                    conn.close()
                conn = None  # opened again on the next batch (the disk may come back)
            if stop:
                break
            if len(batch) < BATCH:
                # Let rows gather: a transaction per row (a steady trickle of requests)
                # would cost many times the rows themselves. They show in the console
                # this much later at most.
                time.sleep(FLUSH_EVERY)
        if conn is not None:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints; fast
        for statement in SCHEMA:
            conn.execute(statement)
        conn.commit()
        return conn

    def _failed(self, error: Exception, n: int) -> None:
        if n:
            self.reactor.callFromThread(self.dropped, "write_error", n)
        now = time.monotonic()
        if now - self._last_error >= 60.0:  # a broken disk fails every batch: once a minute
            self._last_error = now
            self.reactor.callFromThread(
                log.error,
                "request log {path}: {error} ({n} rows dropped; requests are unaffected)",
                path=self.path,
                error=str(error),
                n=n,
            )

    def close(self) -> None:
        """Stops the writer once it has written what is queued (waits up to 2 s)."""
        try:
            self.queue.put(_STOP, timeout=1.0)
        except queue.Full:
            pass
        self.thread.join(2.0)

    # -- queries (thread pool) -----------------------------------------------------

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    def query(self, q: RequestQuery) -> Deferred[dict[str, Any]]:
        """Fires with ``{"rows": [...], "next": cursor or None}``, newest first."""
        return self._in_thread(self._query, q)

    def _query(self, q: RequestQuery) -> dict[str, Any]:
        where, params = q.sql()
        sql = f"SELECT {_SUMMARY} FROM requests{where} ORDER BY ts DESC, id DESC LIMIT ?"
        names = ("id", *SUMMARY, "has_bodies")
        with _reading(self.path) as conn:
            rows = [
                _typed(dict(zip(names, r, strict=True)))
                for r in conn.execute(sql, [*params, q.limit + 1])
            ]
        return page(rows, q.limit)

    def get(self, rid: int) -> Deferred[dict[str, Any] | None]:
        return self._in_thread(self._get, rid)

    def _get(self, rid: int) -> dict[str, Any] | None:
        with _reading(self.path) as conn:
            r = conn.execute(
                f"SELECT id, {', '.join(COLUMNS)} FROM requests WHERE id = ?", (rid,)
            ).fetchone()
        if r is None:
            return None
        d = _typed(dict(zip(("id", *COLUMNS), r, strict=True)))
        d["has_bodies"] = d["request_body"] is not None or d["response_body"] is not None
        d["attempt_log"] = attempt_dicts(json.loads(d["attempt_log"] or "null"))
        return d

    def spend(self, days: int) -> Deferred[list[dict[str, Any]]]:
        """Fires with each key's cost, requests and tokens per UTC day."""
        return self._in_thread(self._spend, days)

    def _spend(self, days: int) -> list[dict[str, Any]]:
        sql = (
            "SELECT key, day, cost_usd, requests, tokens FROM spend_daily "
            "WHERE day >= ? ORDER BY key, day"
        )
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - days * 86400))
        with _reading(self.path) as conn:
            rows = conn.execute(sql, (since,)).fetchall()
        return [
            {"key": k, "day": d, "cost_usd": c or 0.0, "requests": n, "tokens": t or 0}
            for k, d, c, n, t in rows
        ]


def values(row: RequestRow) -> tuple[Any, ...]:
    """The row's column values, its attempts as JSON text (done here, off the reactor)."""
    v = row.as_tuple()
    if v[_ATTEMPTS] is None:
        return v
    return (*v[:_ATTEMPTS], json.dumps(v[_ATTEMPTS]), *v[_ATTEMPTS + 1 :])


def spend_by_day(batch: list[RequestRow]) -> list[tuple[str, str, float, int, int]]:
    """A batch's spend per (key, UTC day), for the ``spend_daily`` upsert."""
    acc: dict[tuple[str, str], list[Any]] = {}
    for r in batch:
        if r.key is None:
            continue
        day = time.strftime("%Y-%m-%d", time.gmtime(r.ts))
        a = acc.get((r.key, day))
        if a is None:
            a = acc[(r.key, day)] = [0.0, 0, 0]
        a[0] += r.cost_usd
        a[1] += 1
        a[2] += r.prompt_tokens + r.completion_tokens
    return [(k, d, a[0], a[1], a[2]) for (k, d), a in acc.items()]


class _reading:
    """A read-only connection for one query, closed after it."""

    def __init__(self, path: str) -> None:
        self.conn = connect(path, readonly=True)

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: Any) -> None:
        self.conn.close()


def _typed(d: dict[str, Any]) -> dict[str, Any]:
    d["cached"] = bool(d["cached"])
    d["stream"] = bool(d["stream"])
    d["has_bodies"] = bool(d.get("has_bodies"))
    return d


def retain(conn: sqlite3.Connection, retention_days: float, max_rows: int) -> None:
    """Deletes rows older than ``retention_days`` and past the newest ``max_rows``."""
    with conn:
        if retention_days > 0:
            conn.execute(
                "DELETE FROM requests WHERE ts < ?", (time.time() - retention_days * 86400,)
            )
        if max_rows > 0:
            row = conn.execute(
                "SELECT id FROM requests ORDER BY id DESC LIMIT 1 OFFSET ?", (max_rows,)
            ).fetchone()
            if row is not None:
                conn.execute("DELETE FROM requests WHERE id <= ?", (row[0],))
        # The daily spend is small (a row per key and day): kept for a year at least.
        keep_days = max(366.0, retention_days)
        since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - keep_days * 86400))
        conn.execute("DELETE FROM spend_daily WHERE day < ?", (since,))
