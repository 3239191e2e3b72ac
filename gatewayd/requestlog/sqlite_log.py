"""The request log in SQLite: one writer thread fed by a bounded queue, batched inserts.

A request only ever appends to a bounded queue (a deque, in the reactor thread): when
it is full the row is dropped and counted, never waited for. The writer thread opens
the database (WAL), drains the queue every :data:`FLUSH_EVERY` seconds in batches of up
to :data:`BATCH` rows per transaction, and prunes old rows (``retention_days``, ``max_rows``) in the background.
A database that cannot be opened or written (bad path, full disk) costs rows, counted
as dropped, and a log line per failure streak: never a request.

With ``--workers`` every worker opens the same file with its own writer: SQLite's WAL
lets several processes write one database (each transaction takes the write lock in
turn, ``busy_timeout`` waits for it in the writer thread, not in a request), so the
rows of every worker reach one log without a channel to the supervisor.

Queries run in the reactor's thread pool, each thread with its own read connection.
Keyset paging (``id < before ORDER BY id DESC LIMIT n``) on an index per filter keeps a
page fast at a million rows: no OFFSET anywhere.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import chain
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool

from gatewayd.observability.log import get_logger
from gatewayd.requestlog.row import (
    COLUMNS,
    LIST_COLUMNS,
    Page,
    Query,
    Row,
    SpendByDay,
    add_spend,
    as_dict,
)

log = get_logger(__name__)

#: Rows per insert transaction at most.
BATCH = 1500
#: Seconds between the writer's drains of the queue.
FLUSH_EVERY = 1.0  # fewer, larger transactions: measured cheaper than 0.1 s per request
#: Seconds between background prunes.
PRUNE_EVERY = 60.0
#: Rows deleted per prune transaction (short write locks for the other workers).
PRUNE_CHUNK = 20_000

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL, request_id TEXT, key_name TEXT, alias TEXT, deployment TEXT,
    dialect TEXT, endpoint TEXT, status INTEGER, attempts INTEGER, fallback TEXT,
    latency_ms REAL, ttft_ms REAL, prompt_tokens INTEGER, completion_tokens INTEGER,
    cost_usd REAL, cached INTEGER, stream INTEGER, error TEXT, attempt_log TEXT,
    request_body TEXT, response_body TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
{
    "".join(
        f"CREATE INDEX IF NOT EXISTS requests_{c} ON requests ({c}, id);"
        for c in ("key_name", "alias", "deployment", "status", "dialect", "endpoint", "cached")
    )
}
"""
_INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


_ROW_MARKS = "(" + ", ".join("?" * len(COLUMNS)) + ")"


@functools.lru_cache(maxsize=64)
def _insert_rows(n: int) -> str:
    """The INSERT of ``n`` rows in one statement."""
    return f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES " + ", ".join([_ROW_MARKS] * n)


def connect(path: str, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection to the log at ``path`` (created, in WAL mode); raises sqlite3.Error
    or OSError when it cannot be."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, fast commits
    conn.executescript(_SCHEMA)
    return conn


class SQLiteLog:
    """The request log at ``path`` (see the module docstring)."""

    def __init__(
        self,
        path: str,
        reactor: Any,
        on_dropped: Callable[[str, int], None],
        retention_days: float = 7.0,
        max_rows: int = 1_000_000,
        queue_size: int = 50_000,
    ) -> None:
        self.path = path
        self.reactor = reactor
        self.retention_days = retention_days
        self.max_rows = max_rows
        #: Told (in the reactor thread) of rows lost: ``("queue_full", n)``, ``("write_error", n)``.
        self.on_dropped = on_dropped
        self.queue_size = queue_size
        self._queue: deque[Row] = deque()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._failing = False
        self._next_prune = 0.0

    # -- the request side (reactor thread) ---------------------------------------

    def add(self, row: Row) -> None:
        """Queue ``row``; when the queue is full it is dropped and counted. A deque
        append: no lock and no wake-up of the writer, which drains on its own beat."""
        if len(self._queue) >= self.queue_size:
            self.on_dropped("queue_full", 1)
            return
        self._queue.append(row)

    # -- the writer thread -----------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._write_loop, name="gatewayd-request-log", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> Deferred[None]:
        """Write what is queued, then stop the writer (waits at most ``timeout``).
        Fires with None."""
        thread, self._thread = self._thread, None
        if thread is None:
            return succeed(None)
        self._stopping.set()
        return deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), thread.join, timeout
        ).addCallback(lambda _: None)

    def stop_now(self, timeout: float = 10.0) -> None:
        """:meth:`stop`, waiting in the calling thread (tests, tools)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            thread.join(timeout)

    def _open(self) -> sqlite3.Connection | None:
        try:
            return connect(self.path)
        except (sqlite3.Error, OSError) as e:
            self._failed("cannot open", e)
            return None

    def _failed(self, what: str, e: Exception) -> None:
        if not self._failing:  # once per failure streak, not per batch
            log.error("request log {path}: {what}: {err}", path=self.path, what=what, err=str(e))
        self._failing = True

    def _write_loop(self) -> None:
        conn = self._open()
        pending = self._queue
        while True:
            # Drained on a beat, not woken per row: a request only appends to a deque,
            # and each transaction carries every row of the last beat.
            stopping = self._stopping.wait(FLUSH_EVERY)
            while pending:
                batch: list[Row] = []
                while pending and len(batch) < BATCH:
                    batch.append(pending.popleft())
                if conn is None:
                    conn = self._open()  # a path that appeared, a disk with room again
                if conn is None or not self._insert(conn, batch):
                    self.reactor.callFromThread(self.on_dropped, "write_error", len(batch))
            now = time.time()
            if conn is not None and now >= self._next_prune:
                self._next_prune = now + PRUNE_EVERY
                self._prune_quietly(conn, now)
            if stopping:
                break
        if conn is not None:
            conn.close()

    def _insert(self, conn: sqlite3.Connection, batch: list[Row]) -> bool:
        # One multi-row INSERT per chunk, not executemany: the sqlite3 module lets the
        # GIL go and takes it back around every statement step, so a row at a time means
        # a GIL hand-off with the reactor thread per row (measured: 40% more time).
        per = max(1, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS))
        try:
            with conn:
                conn.execute("BEGIN")
                for i in range(0, len(batch), per):
                    chunk = batch[i : i + per]
                    conn.execute(_insert_rows(len(chunk)), list(chain.from_iterable(chunk)))
        except sqlite3.Error as e:
            self._failed("cannot write", e)
            return False
        self._failing = False
        return True

    def _prune_quietly(self, conn: sqlite3.Connection, now: float) -> None:
        try:
            prune(conn, now, self.retention_days, self.max_rows)
        except sqlite3.Error as e:
            self._failed("cannot prune", e)

    # -- queries (thread pool) ---------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
        return conn

    def query(self, q: Query) -> Deferred[Page]:
        """Fires with the page, newest first (fails with sqlite3.Error)."""
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.query_now, q)

    def get(self, row_id: int) -> Deferred[dict[str, Any] | None]:
        """Fires with the row with its bodies, or None."""
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self.get_now, row_id)

    def spend_by_day(self, since: float) -> Deferred[SpendByDay]:
        """Fires with each key's cost and requests per UTC day since ``since``."""
        return deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self.spend_by_day_now, since
        )

    def spend_by_day_now(self, since: float) -> SpendByDay:
        out: SpendByDay = {}
        for key, day, usd, n in self._reader().execute(
            "SELECT key_name, CAST(ts / 86400 AS INTEGER) AS day, SUM(cost_usd), COUNT(*) "
            "FROM requests WHERE ts >= ? AND key_name IS NOT NULL GROUP BY key_name, day",
            (since,),
        ):
            add_spend(out, key, day * 86400.0, usd or 0.0, n)
        return out

    def query_now(self, q: Query) -> Page:
        """:meth:`query`, in the calling thread."""
        return run_query(self._reader(), q)

    def get_now(self, row_id: int) -> dict[str, Any] | None:
        cur = self._reader().execute(
            f"SELECT id, {', '.join(COLUMNS)} FROM requests WHERE id = ?", (row_id,)
        )
        found = cur.fetchone()
        return None if found is None else as_dict(found[0], found[1:], ("id", *COLUMNS))


def run_query(conn: sqlite3.Connection, q: Query) -> Page:
    """One page of ``q`` from ``conn``: keyset paging on ``id``, newest first."""
    where: list[str] = []
    params: list[Any] = []
    for name, value in q.equal:
        where.append(f"{name} = ?")
        params.append(value)
    if q.since is not None:
        where.append("ts >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append("ts < ?")
        params.append(q.until)
    if q.before is not None:
        where.append("id < ?")
        params.append(q.before)
    sql = f"SELECT id, {', '.join(LIST_COLUMNS[1:])} FROM requests"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(q.limit + 1)
    rows = conn.execute(sql, params).fetchall()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    out = [as_dict(r[0], (*r[1:], None, None, None)) for r in rows]
    return Page(out, out[-1]["id"] if more and out else None)


def prune(conn: sqlite3.Connection, now: float, retention_days: float, max_rows: int) -> int:
    """Delete rows older than ``retention_days`` and past the newest ``max_rows``, in
    chunks; returns how many went."""
    gone = 0
    if retention_days > 0:
        cutoff = now - retention_days * 86400.0
        while True:
            with conn:
                conn.execute("BEGIN")
                n = conn.execute(
                    "DELETE FROM requests WHERE id IN "
                    "(SELECT id FROM requests WHERE ts < ? LIMIT ?)",
                    (cutoff, PRUNE_CHUNK),
                ).rowcount
            gone += n
            if n < PRUNE_CHUNK:
                break
    if max_rows > 0:
        found = conn.execute(
            "SELECT id FROM requests ORDER BY id DESC LIMIT 1 OFFSET ?", (max_rows,)
        ).fetchone()
        if found is not None:
            with conn:
                conn.execute("BEGIN")
                gone += conn.execute("DELETE FROM requests WHERE id <= ?", (found[0],)).rowcount
    return gone
