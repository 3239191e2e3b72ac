"""``GET /files`` and ``GET /batches`` on an alias with several deployments that hold
objects: each deployment's list (one pinned call each, through the same stages and
router as any request), merged into one, every id signed for the deployment it came
from and cut to what the caller may see.

A deployment that fails is left out (logged); when every one fails, the first failure
is the answer. ``has_more`` is true when any list has more (a page cursor, ``after``,
names one deployment: such a page is asked of it alone, see :mod:`gatewayd.web.objects`).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from gatewayd.observability.log import get_logger
from gatewayd.providers.base import Endpoint, openai_error
from gatewayd.routing import RouteError, RouteResult
from gatewayd.stages import RouteContext, route_alias
from gatewayd.web.answers import Answer
from gatewayd.web.exchange import upstream_call, write_json_error
from gatewayd.web.headers import CONTENT_LENGTH, CONTENT_TYPE, X_GATEWAYD_MODEL, header_value
from gatewayd.web.object_answers import (
    ObjectStore,
    item_ids,
    list_answer,
    list_items,
    owner_of,
    sees_all,
    visible_signed,
)
from gatewayd.web.request import GatewayRequest

log = get_logger(__name__)


class ListAcross:
    """One list request over several deployments of ``alias``."""

    def __init__(
        self,
        store: ObjectStore,
        request: GatewayRequest,
        alias: str,
        endpoint: Endpoint,
        path: str,
        deployments: list[str],
    ) -> None:
        self.store = store
        self.request = request
        self.alias = alias
        self.endpoint = endpoint
        self.path = path
        self.deployments = deployments
        self.gone = False
        self.pending: Deferred[Any] | None = None

    def start(self) -> int:
        """Send every deployment its list call; the answer is written when all are in."""
        gateway, request = self.store.gateway, self.request
        request.endpoint = self.endpoint.value
        calls = []
        for dep in self.deployments:
            call = upstream_call(
                request, self.endpoint, {}, False, method="GET", path=self.path, pin=dep
            )
            calls.append(
                gateway.pipeline.run(RouteContext(gateway, request, self.alias, call), route_alias)
            )
        self.pending = DeferredList(calls, consumeErrors=True)
        request.on_lost = self._lost
        self.pending.addCallback(self._gathered)
        self.pending.addErrback(self._bug)
        return NOT_DONE_YET

    def _lost(self) -> None:
        self.gone = True
        if self.pending is not None:
            self.pending.cancel()

    def _gathered(self, outcomes: list[tuple[bool, Any]]) -> Deferred[None] | None:
        if self.gone:
            return None
        results: list[RouteResult] = []
        failures: list[Failure] = []
        for ok, value in outcomes:
            (results if ok else failures).append(value)
        for failure in failures:
            log.info(
                "{alias}: a deployment's list failed: {err}",
                alias=self.alias,
                err=failure.getErrorMessage(),
            )
        if not results:
            self._refuse(failures[0])
            return None
        if sees_all(self.request):
            self._write(results)
            return None
        learnt = [
            self.store.owners.learn(r.deployment, item_ids(list_items(r.response.body) or []))
            for r in results
        ]
        d: Deferred[Any] = DeferredList(learnt, consumeErrors=True)
        return d.addCallback(lambda _: self._write(results))

    def _write(self, results: list[RouteResult]) -> None:
        if self.gone:
            return
        owner, everything = owner_of(self.request), sees_all(self.request)
        shown: list[dict[str, Any]] = []
        more = False
        for r in results:
            items = list_items(r.response.body) or []
            shown += visible_signed(self.store, self.alias, r.deployment, items, owner, everything)
            try:
                more = more or bool(json.loads(r.response.body or b"{}").get("has_more"))
            except (ValueError, AttributeError):
                pass
        body = json.dumps(list_answer(shown, more)).encode()
        req = self.request
        req.deployment = results[0].deployment
        req.attempts = sum(r.attempts for r in results)
        req.setResponseCode(200)
        req.put_header(X_GATEWAYD_MODEL, header_value(self.alias))
        req.put_header(CONTENT_TYPE, b"application/json")
        req.put_header(CONTENT_LENGTH, b"%d" % len(body))
        req.write(body)
        req.finish()

    def _refuse(self, failure: Failure) -> None:
        err = failure.value
        if isinstance(err, RouteError):
            status, error = err.status, err.error
        else:
            log.failure("listing failed", failure)
            status, error = 500, openai_error("internal error in gatewayd", "api_error")
        body = write_json_error(self.request, Answer(), status, error)
        self.request.setHeader(b"content-length", b"%d" % len(body))
        self.request.write(body)
        self.request.finish()

    def _bug(self, failure: Failure) -> None:
        if self.gone or self.request.finished:
            return
        self._refuse(failure)
