"""The OpenAI Responses dialect: POST /v1/responses, GET and DELETE
/v1/responses/{id}, GET /v1/responses/{id}/input_items, POST /v1/responses/{id}/cancel.

``previous_response_id`` is resolved here, before routing: a response this gateway
made (translated from chat) is replayed as input items; one a native upstream made
pins the follow-up to that deployment, which alone knows the id.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd.dialects import Dialect
from gatewayd.dialects.responses import listed_items
from gatewayd.dialects.store import ResponseStore, StoredResponse
from gatewayd.observability.log import get_logger
from gatewayd.providers.base import Endpoint
from gatewayd.web.answers import ResponsesAnswer
from gatewayd.web.exchange import Exchange, Gateway, upstream_call
from gatewayd.web.request import GatewayRequest
from gatewayd.web.resource_kinds import NotFound, RoutedResource

log = get_logger(__name__)


def _items(value: Any) -> list[Any]:
    """``input`` as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


class ResponsesResource(RoutedResource):
    """POST /v1/responses; children ``{id}`` and ``{id}/cancel``."""

    isLeaf = False
    dialect = Dialect.RESPONSES

    def __init__(self, gateway: Gateway, store: ResponseStore) -> None:
        super().__init__(gateway)
        self.store = store

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return StoredResponseResource(self, path.decode("utf-8", "replace"))

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        parsed = self.parse(request, "responses")
        if isinstance(parsed, bytes):
            return parsed
        body, stream = parsed
        previous = body.get("previous_response_id")
        if previous is None:
            self._route(request, body, body, stream, [], None)
            return NOT_DONE_YET
        if not isinstance(previous, str):
            return self.error(
                request, 400, "previous_response_id must be a string", param="previous_response_id"
            )
        d = self.store.get(previous)
        d.addCallback(self._resume, request, body, stream, previous)
        d.addErrback(self._store_failed, request)
        return NOT_DONE_YET

    def _resume(
        self,
        data: bytes | None,
        request: GatewayRequest,
        body: dict[str, Any],
        stream: bool,
        previous: str,
    ) -> None:
        if request.finished or request._disconnected:
            return
        if data is None:
            self._finish(
                request,
                self.error(
                    request,
                    404,
                    f"Previous response with id '{previous}' not found.",
                    "invalid_request_error",
                    "previous_response_not_found",
                    "previous_response_id",
                ),
            )
            return
        stored = StoredResponse.load(data)
        history = stored.history()
        if stored.native_deployment is not None:
            # The upstream keeps its own history: send the request as it is, to it alone.
            self._route(request, body, body, stream, history, stored.native_deployment)
            return
        sent = {k: v for k, v in body.items() if k != "previous_response_id"}
        sent["input"] = history + _items(body.get("input"))
        self._route(request, sent, body, stream, history, None)

    def _route(
        self,
        request: GatewayRequest,
        sent: dict[str, Any],
        echo: dict[str, Any],
        stream: bool,
        history: list[Any],
        pin: str | None,
    ) -> None:
        assert request.alias is not None
        items = history + _items(echo.get("input"))
        keep_it = echo.get("store") is not False
        general = self.gateway.router.table.config.general

        def keep(response: dict[str, Any], native: str | None) -> None:
            if not keep_it or not isinstance(response.get("id"), str):
                return
            if hasattr(self.store, "max_bytes"):  # the bound may change on reload
                self.store.max_bytes = general.response_store_max_bytes
            record = StoredResponse(response, items, native)
            self.store.put(response["id"], record.dump(), general.response_store_ttl)

        call = upstream_call(
            request,
            Endpoint.RESPONSES,
            sent,
            stream,
            dialect=Dialect.RESPONSES,
            drop_params=general.drop_params,
            pin=pin,
        )
        Exchange(
            self.gateway, request, request.alias, call, ResponsesAnswer(request.alias, echo, keep)
        )

    def _store_failed(self, failure: Failure, request: GatewayRequest) -> None:
        log.failure("the response store failed", failure)
        if not request.finished:
            body = self.error(request, 503, "the response store is unavailable", "api_error")
            self._finish(request, body)

    @staticmethod
    def _finish(request: GatewayRequest, body: bytes) -> None:
        request.setHeader(b"content-length", str(len(body)).encode())
        request.write(body)
        request.finish()


class StoredResponseResource(RoutedResource):
    """GET and DELETE /v1/responses/{id}; POST /v1/responses/{id}/cancel."""

    isLeaf = False
    dialect = Dialect.RESPONSES

    def __init__(
        self, parent: ResponsesResource, response_id: str, cancel: bool = False, items: bool = False
    ) -> None:
        super().__init__(parent.gateway)
        self.parent = parent
        self.response_id = response_id
        self.cancel = cancel
        self.items = items

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"cancel" and not self.cancel and not self.items:
            return StoredResponseResource(self.parent, self.response_id, cancel=True)
        if path == b"input_items" and not self.cancel and not self.items:
            return StoredResponseResource(self.parent, self.response_id, items=True)
        if path == b"":
            return self
        return NotFound()

    def _lookup(self, request: GatewayRequest, then: Any) -> int:
        d: Deferred[bytes | None] = self.parent.store.get(self.response_id)

        def finish(body: bytes) -> None:
            if not (request.finished or request._disconnected):
                ResponsesResource._finish(request, body)

        def found(data: bytes | None) -> Deferred[None] | None:
            if request.finished or request._disconnected:
                return None
            if data is None:
                body = self.error(
                    request,
                    404,
                    f"Response with id '{self.response_id}' not found.",
                    param="response_id",
                )
            else:
                answer = then(request, StoredResponse.load(data))
                if isinstance(answer, Deferred):  # answered once the store has done
                    return answer.addCallback(finish)
                body = answer
            ResponsesResource._finish(request, body)
            return None

        d.addCallback(found)
        d.addErrback(self.parent._store_failed, request)
        return NOT_DONE_YET

    def render_GET(self, request: GatewayRequest) -> int | bytes:
        if self.cancel:
            return NotFound().render(request)
        if self.items:
            return self._lookup(request, self._input_items)
        return self._lookup(request, lambda r, s: self._json(r, s.response))

    def _input_items(self, request: GatewayRequest, stored: StoredResponse) -> bytes:
        """``{"object": "list", "data", "first_id", "last_id", "has_more"}``; ``order``
        (``desc``, the default, or ``asc``), ``limit`` (default 20) and ``after`` apply."""
        args = request.args or {}
        order = (args.get(b"order") or [b"desc"])[0]
        try:
            limit = max(1, min(100, int((args.get(b"limit") or [b"20"])[0])))
        except ValueError:
            return self.error(request, 400, "limit must be an integer", param="limit")
        items = listed_items(stored.input_items, self.response_id)
        if order != b"asc":
            items.reverse()
        after = (args.get(b"after") or [None])[0]
        if after is not None:
            ids = [i["id"] for i in items]
            key = after.decode("utf-8", "replace")
            items = items[ids.index(key) + 1 :] if key in ids else []
        page = items[:limit]
        return self._json(
            request,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            },
        )

    def render_DELETE(self, request: GatewayRequest) -> int | bytes:
        if self.cancel or self.items:
            return NotFound().render(request)

        def delete(r: GatewayRequest, s: StoredResponse) -> Deferred[bytes]:
            # Answered once deleted: a GET right after, on any instance, must not find it.
            d = self.parent.store.delete(self.response_id)
            payload = {"id": self.response_id, "object": "response", "deleted": True}
            return d.addCallback(lambda _: self._json(r, payload))

        return self._lookup(request, delete)

    def render_POST(self, request: GatewayRequest) -> int | bytes:
        if not self.cancel or self.items:
            return NotFound().render(request)
        # Every response here ran in the foreground and is finished by the time it can
        # be looked up: only background responses can be cancelled.
        return self._lookup(
            request,
            lambda r, s: self.error(
                r,
                400,
                "Only responses created with background=true can be cancelled.",
                param="response_id",
            ),
        )

    @staticmethod
    def _json(request: GatewayRequest, payload: dict[str, Any]) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(payload).encode()
