"""The writer's multi-row INSERT: every row written, in order, across chunk bounds."""

from __future__ import annotations

from pathlib import Path

from gatewayd.requestlog.row import COLUMNS
from gatewayd.requestlog.sqlite_store import SCHEMA, connect, insert_rows


def test_rows_across_chunks_are_all_written_in_order(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "r.db"))
    for statement in SCHEMA:
        conn.execute(statement)
    ts, rid = COLUMNS.index("ts"), COLUMNS.index("request_id")
    rows = []
    for i in range(2345):  # two full chunks of 1000 and a remainder
        v: list[object] = [None] * len(COLUMNS)
        v[ts], v[rid] = float(i), f"req-{i}"
        rows.append(tuple(v))
    with conn:
        insert_rows(conn, rows)
    got = [r[0] for r in conn.execute("SELECT request_id FROM requests ORDER BY id")]
    assert got == [f"req-{i}" for i in range(2345)]
    with conn:
        insert_rows(conn, [])  # nothing to write: no statement
    assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 2345
