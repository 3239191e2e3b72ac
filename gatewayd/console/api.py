"""The console's JSON API under ``/ui/api/`` (docs/console.md): what the pages use,
for operators to script too. Every answer is built from names and numbers only: no
upstream key, client key or master key can be in one."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Protocol

from twisted.internet.defer import DeferredList
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd.console.overview import overview
from gatewayd.console.session import Admin, csrf_token
from gatewayd.limits import Limiter
from gatewayd.observability.log import get_logger
from gatewayd.requestlog import RequestLog
from gatewayd.requestlog.row import parse_query
from gatewayd.routing import Router

log = get_logger(__name__)


class ConsoleGateway(Protocol):
    """What the console reads of the running service."""

    @property
    def router(self) -> Router: ...

    @property
    def limiter(self) -> Limiter: ...

    @property
    def request_log(self) -> RequestLog: ...


def send_json(request: Request, payload: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


def api_error(request: Request, status: int, message: str) -> bytes:
    return send_json(request, {"error": {"message": message, "status": status}}, status)


def _finish(request: Request, body: bytes) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def session_info(gateway: ConsoleGateway, request: Request, admin: Admin) -> bytes:
    """GET /ui/api/session: who is signed in, and the CSRF token of a cookie session."""
    config = gateway.router.table.config
    return send_json(request, {"user": admin.name, "csrf_token": csrf_token(config, admin) or None})


def overview_info(gateway: ConsoleGateway, request: Request) -> bytes:
    """GET /ui/api/overview."""
    return send_json(request, overview(gateway.router, gateway.request_log))


def deployments_info(gateway: ConsoleGateway, request: Request) -> bytes:
    """GET /ui/api/deployments: the Overview's deployments as one flat list, each with
    its ``alias`` (for scripts: ``jq '.data[] | select(.state != "healthy")'``)."""
    o = overview(gateway.router, gateway.request_log)
    flat = [{"alias": a["alias"], **d} for a in o["aliases"] for d in a["deployments"]]
    return send_json(request, {"time": o["time"], "data": flat})


def requests_list(gateway: ConsoleGateway, request: Request) -> bytes | int:
    """GET /ui/api/requests?key=&alias=&deployment=&status=&dialect=&endpoint=&cached=
    &since=&until=&before=&limit=: a page, newest first, and the next page's ``before``."""
    try:
        q = parse_query(request.args)
    except ValueError as e:
        return api_error(request, 400, str(e))

    def done(page: Any) -> None:
        _finish(request, send_json(request, {"data": page.rows, "next_before": page.next_before}))

    gateway.request_log.query(q).addCallbacks(done, _failed, errbackArgs=(request,))
    return NOT_DONE_YET


def request_detail(gateway: ConsoleGateway, request: Request, row_id: str) -> bytes | int:
    """GET /ui/api/requests/{id}: one row, with its bodies when they were stored."""
    if not row_id.isdigit():
        return api_error(request, 404, "no such request")

    def done(row: dict[str, Any] | None) -> None:
        if row is None:
            _finish(request, api_error(request, 404, "no such request"))
        else:
            _finish(request, send_json(request, row))

    gateway.request_log.get(int(row_id)).addCallbacks(done, _failed, errbackArgs=(request,))
    return NOT_DONE_YET


def keys_info(gateway: ConsoleGateway, request: Request) -> bytes | int:
    """GET /ui/api/keys: every client key's limits, what is left, spend this period and
    per day (the last 7 days, from the request log)."""
    keys = gateway.router.table.config.keys.keys
    infos = [gateway.limiter.key_info(k) for k in keys]
    by_day = gateway.request_log.spend_by_day(7)

    def done(results: list[tuple[bool, Any]]) -> None:
        days: dict[str, dict[str, Any]] = {}
        ok, found = results[-1]
        if ok:
            days = found
        out = []
        for key, (ok, info) in zip(keys, results[:-1], strict=True):
            entry: dict[str, Any] = {
                "name": key.name,
                "admin": key.admin,
                "models": list(key.models) if key.models is not None else None,
                "spend_per_day": days.get(key.name, {}),
            }
            if ok:
                entry.update(info)
            else:
                entry["error"] = "the shared state store is unavailable"
            out.append(entry)
        _finish(request, send_json(request, {"data": out}))

    DeferredList([*infos, by_day], consumeErrors=True).addCallback(done)
    return NOT_DONE_YET


def _failed(failure: Failure, request: Request) -> None:
    if failure.check(sqlite3.Error, OSError):
        log.error("request log query failed: {err}", err=failure.getErrorMessage())
        _finish(request, api_error(request, 503, "the request log is unavailable"))
        return
    log.failure("console API failed", failure)
    _finish(request, api_error(request, 500, "internal error in gatewayd"))
