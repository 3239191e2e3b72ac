"""``/ui/api/``: the JSON the pages use, for scripts too (docs/console.md).

GET /ui/api/session          who is signed in, and the CSRF token for POSTs
GET /ui/api/overview         aliases, deployments' state and recent numbers, the hour's chart
GET /ui/api/requests         the request log, newest first, filtered, keyset paged
GET /ui/api/requests/{id}    one request, with its bodies when they were stored
GET /ui/api/keys             each key's limits, what is left, spend this period and per day
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import gatherResults
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd.console.guard import ConsoleGateway, admin_of, config_of
from gatewayd.console.replies import finish, json_answer, json_error
from gatewayd.console.session import Admin, csrf_token
from gatewayd.observability.log import get_logger
from gatewayd.requestlog import QueryError, RequestQuery

log = get_logger(__name__)


class ApiResource(Resource):
    """A GET under ``/ui/api/``: 401 unless an admin asks."""

    isLeaf = True

    def __init__(self, gateway: ConsoleGateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render_GET(self, request: Request) -> bytes | int:
        admin = admin_of(self.gateway, request)
        if admin is None:
            return json_error(
                request, 401, "sign in with the master key or an admin key", "unauthorized"
            )
        return self.answer(request, admin)

    def answer(self, request: Request, admin: Admin) -> bytes | int:
        raise NotImplementedError

    def later(self, request: Request, d: Any) -> int:
        """Answers when ``d`` fires with the payload (a store's failure: 503)."""

        def failed(f: Failure) -> None:
            log.failure("console query failed", f)
            finish(
                request, json_error(request, 503, "the request log is unavailable", "unavailable")
            )

        d.addCallbacks(lambda payload: finish(request, json_answer(request, payload)), failed)
        return NOT_DONE_YET


class SessionInfo(ApiResource):
    def answer(self, request: Request, admin: Admin) -> bytes:
        token = None if admin.cookie is None else csrf_token(config_of(self.gateway), admin.cookie)
        return json_answer(request, {"admin": admin.name, "csrf_token": token})


class Overview(ApiResource):
    def answer(self, request: Request, admin: Admin) -> bytes:
        router = self.gateway.router
        table = router.table
        health = router.health
        now_clock = health.now()
        now = time.time()
        rlog = self.gateway.request_log
        stats = None if rlog is None else rlog.stats
        aliases = []
        for alias, routes in table.routes.items():
            deps = []
            for route in routes:
                d = route.deployment
                h = health.get(route.id)
                cooling = now_clock < h.cooldown_until
                state = "healthy"
                if cooling:  # a probe's cooldown says so in its error (gatewayd.fleet)
                    probed = (h.last_error or "").startswith("health check:")
                    state = "down_by_health_check" if probed else "cooling_down"
                dep: dict[str, Any] = {
                    "id": route.id,
                    "provider": d.provider.prefix,
                    "model": d.model,
                    "state": state,
                    "cooling_down_until": (now + h.cooldown_until - now_clock) if cooling else None,
                    "in_flight": h.in_flight,
                    "consecutive_fails": h.consecutive_fails,
                    "last_error": h.last_error,
                    "last_error_status": h.last_error_status,
                }
                if stats is not None:
                    dep["recent"] = stats.recent(stats.deployments.get(route.id), now)
                deps.append(dep)
            entry: dict[str, Any] = {
                "alias": alias,
                "deployments": deps,
                "fallbacks": list(table.fallbacks_for(alias)),
            }
            if stats is not None:
                entry["recent"] = stats.recent(stats.aliases.get(alias), now)
            aliases.append(entry)
        return json_answer(
            request,
            {
                "now": now,
                "aliases": aliases,
                "chart": [] if stats is None else stats.chart(now),
                "request_log": _log_kind(rlog),
            },
        )


def _log_kind(rlog: Any) -> str:
    if rlog is None:
        return "off"
    return "memory" if rlog.settings.path is None else "sqlite"


class Requests(ApiResource):
    """``/ui/api/requests`` and ``/ui/api/requests/{id}``."""

    def answer(self, request: Request, admin: Admin) -> bytes | int:
        rlog = self.gateway.request_log
        if rlog is None:
            return json_error(request, 404, "the request log is off", "request_log_off")
        if request.postpath and request.postpath[0]:
            try:
                rid = int(request.postpath[0])
            except ValueError:
                return json_error(request, 400, "a request's id is a number", "bad_id")
            d = rlog.store.get(rid)

            def found(row: dict[str, Any] | None) -> None:
                if row is None:
                    finish(request, json_error(request, 404, f"no request {rid}", "not_found"))
                else:
                    finish(request, json_answer(request, row))

            d.addCallbacks(
                found,
                lambda f: finish(
                    request,
                    json_error(request, 503, "the request log is unavailable", "unavailable"),
                ),
            )
            return NOT_DONE_YET
        args = {
            k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
            for k, v in (request.args or {}).items()
            if v
        }
        try:
            q = RequestQuery.from_args(args)
        except QueryError as e:
            return json_error(request, 400, str(e), "bad_filter")
        return self.later(request, rlog.store.query(q))


class Keys(ApiResource):
    def answer(self, request: Request, admin: Admin) -> int:
        config = config_of(self.gateway)
        keys = config.keys.keys
        rlog = self.gateway.request_log
        per_key = [self.gateway.limiter.key_info(k) for k in keys]
        spend = rlog.store.spend(30) if rlog is not None else None
        wanted = per_key + ([spend] if spend is not None else [])

        def done(results: list[Any]) -> dict[str, Any]:
            days = results[len(keys)] if spend is not None else []
            out = []
            for k, info in zip(keys, results[: len(keys)], strict=True):
                out.append(
                    {
                        "name": k.name,
                        "admin": k.admin,
                        "models": None if k.models is None else list(k.models),
                        **info,
                        "per_day": [d for d in days if d["key"] == k.name],
                    }
                )
            return {"keys": out}

        return self.later(request, gatherResults(wanted, consumeErrors=True).addCallback(done))


class ApiRoot(Resource):
    def __init__(self, gateway: ConsoleGateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway
        self.putChild(b"session", SessionInfo(gateway))
        self.putChild(b"overview", Overview(gateway))
        self.putChild(b"requests", Requests(gateway))
        self.putChild(b"keys", Keys(gateway))

    def getChild(self, path: bytes, request: Request) -> IResource:
        return NotFoundJSON()


class NotFoundJSON(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def render(self, request: Request) -> bytes:
        return json_error(request, 404, "unknown console API path", "not_found")
