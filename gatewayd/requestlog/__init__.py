"""The request log: one row per request (SQLite with WAL, or an in-memory ring), the
stage that writes it, and the queries the console runs (see docs/console.md)."""

from gatewayd.requestlog.log import RequestLog
from gatewayd.requestlog.query import QueryError, RequestQuery
from gatewayd.requestlog.row import RequestRow
from gatewayd.requestlog.stage import RequestLogStage, unrouted_row

__all__ = [
    "QueryError",
    "RequestLog",
    "RequestLogStage",
    "RequestQuery",
    "RequestRow",
    "unrouted_row",
]
