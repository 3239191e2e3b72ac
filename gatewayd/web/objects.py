"""Files and batches: objects one deployment holds, reached by the signed ids of
:mod:`gatewayd.web.object_ids`.

``POST /files`` (multipart) and ``POST /batches`` are routed by the alias the client
names: the ``x-gatewayd-model`` header, a ``model`` form or body field (the SDK's
``extra_body``), or ``?model=``; a batch goes where its input file is. Every later call
(``GET /files/{id}``, ``/content``, ``DELETE``, ``GET /batches/{id}``, ``/cancel``) is
pinned to the deployment its id names. Ids in answers (``id``, a batch's
``input_file_id``, ``output_file_id``, ``error_file_id``) are handed out signed, so a
batch's output downloads through the gateway. A key sees only its own objects: another
key's id answers 404, and lists show only what this key created (owners are remembered
here and in the state store). A list asks every deployment that holds objects
(:mod:`gatewayd.web.object_lists`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd.providers.base import Endpoint
from gatewayd.routing import RouteResult
from gatewayd.web.body import BodyError, parse_body
from gatewayd.web.exchange import Gateway, upstream_call
from gatewayd.web.media import MediaExchange
from gatewayd.web.object_answers import (
    ObjectStore,
    item_ids,
    list_answer,
    list_items,
    may_see,
    owner_of,
    sees_all,
    signed,
    visible_signed,
)
from gatewayd.web.object_ids import ObjectIds, ObjectRef
from gatewayd.web.object_lists import ListAcross
from gatewayd.web.request import GatewayRequest
from gatewayd.web.resource_kinds import RoutedResource
from gatewayd.web.upload import too_large_message

MODEL_HEADER = b"x-gatewayd-model"


class ObjectExchange(MediaExchange):
    """A routed object call whose JSON answer has its ids handed out signed."""

    def __init__(
        self,
        store: ObjectStore,
        request: GatewayRequest,
        alias: str,
        owner: str,
        *args: Any,
        **kw: Any,
    ) -> None:
        self.store = store
        #: Who owns what this answer names: the caller for a new object, else the
        #: owner its id says (the master key reading a key's file).
        self.owner = owner
        super().__init__(store.gateway, request, alias, *args, **kw)

    def _routed(self, result: RouteResult) -> None:
        """A key's list waits for the owners of its items that this process does not
        know (made through another worker or instance) to be read from the state store."""
        items = None if sees_all(self.request) else list_items(result.response.body)
        if not items:
            super()._routed(result)
            return
        learnt = self.store.owners.learn(result.deployment, item_ids(items))
        learnt.addCallback(lambda _: super(ObjectExchange, self)._routed(result))
        learnt.addErrback(self._bug)

    def rewrite(self, body: bytes, result: RouteResult) -> bytes:
        if (self.call.path or "").endswith("/content"):
            return body  # a file's bytes (a one-line JSONL is JSON too): never touched
        try:
            obj = json.loads(body)
        except ValueError:
            return body
        if not isinstance(obj, dict):
            return body
        dep = result.deployment
        items = list_items(body)
        if items is None:
            obj = signed(self.store, self.alias, dep, obj, self.owner, made=True)
        else:
            shown = visible_signed(
                self.store, self.alias, dep, items, self.owner, sees_all(self.request)
            )
            obj.update(list_answer(shown, bool(obj.get("has_more"))))
        return json.dumps(obj).encode()


class _ObjectResource(RoutedResource):
    isLeaf = False  # ids below

    def __init__(self, store: ObjectStore) -> None:
        super().__init__(store.gateway)
        self.store = store

    def _not_found(self, request: GatewayRequest, what: str) -> bytes:
        return self.error(request, 404, f"No such {what}", code="not_found", param="id")

    def _named_alias(
        self, request: GatewayRequest, endpoint: Endpoint, field: Any = None
    ) -> str | bytes:
        """The alias the client names (header, body/form field, query), or the one alias
        that serves ``endpoint``; else the error body."""
        header = request.getHeader(MODEL_HEADER)
        alias: Any = header.decode("utf-8", "replace") if isinstance(header, bytes) else header
        if not alias:
            alias = field
        if not alias:
            query = request.args.get(b"model")
            alias = query[0].decode("utf-8", "replace") if query else None
        if not alias:
            router = self.gateway.router
            table = router.table
            serving = [a for a in table.routes if router.endpoints.any(table, a, endpoint)]
            if len(serving) != 1:
                return self.error(
                    request,
                    400,
                    "name the model that holds your files and batches: the x-gatewayd-model "
                    "header, a model field (extra_body) or ?model=",
                    code="missing_model",
                    param="model",
                )
            alias = serving[0]
        if not isinstance(alias, str):
            return self.error(request, 400, "model must be a string", param="model")
        refused = self.admit_alias(request, alias) or self.refuse_unserved(request, alias, endpoint)
        return refused if refused is not None else alias

    def _opened(self, request: GatewayRequest, kind: str, token: str) -> ObjectRef | bytes:
        """The object an id names, if this caller may reach it; else the 404 body."""
        ref = self.store.ids.open(kind, token)
        what = "file" if kind == "file" else "batch"
        if ref is None or not may_see(request, ref.owner):
            return self._not_found(request, what)
        routes = self.gateway.router.table.routes.get(ref.alias, ())
        if not any(r.id == ref.deployment for r in routes):
            return self.error(
                request,
                404,
                f"the deployment that holds this {what} is no longer configured",
                code="not_found",
                param="id",
            )
        refused = self.admit_alias(request, ref.alias)
        return refused if refused is not None else ref

    def _send(
        self,
        request: GatewayRequest,
        alias: str,
        endpoint: Endpoint,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        pin: str | None = None,
        owner: str | None = None,
        **kw: Any,
    ) -> int:
        request.endpoint = endpoint.value
        call = upstream_call(
            request, endpoint, body or {}, False, method=method, path=path, pin=pin, **kw
        )
        ObjectExchange(
            self.store, request, alias, owner_of(request) if owner is None else owner, call
        )
        return NOT_DONE_YET

    def _list(self, request: GatewayRequest, endpoint: Endpoint, kind: str) -> bytes | int:
        """``GET /files`` or ``/batches``: the alias's one deployment that holds objects
        asked, or each of several (merged: :mod:`gatewayd.web.object_lists`)."""
        alias = self._named_alias(request, endpoint)
        if isinstance(alias, bytes):
            return alias
        pairs, cursor = [], None
        for k, v in parse_qsl(request.uri.partition(b"?")[2].decode("utf-8", "replace")):
            if k == "model":
                continue
            if k == "after":  # a gateway id: the upstream's own, on its deployment alone
                cursor = self.store.ids.open(kind, v)
                if cursor is not None:
                    v = cursor.upstream_id
            pairs.append((k, v))
        path = endpoint.value + ("?" + urlencode(pairs) if pairs else "")
        router = self.gateway.router
        routes = router.endpoints.only(router.table, alias, endpoint) or router.table.routes[alias]
        deployments = [r.id for r in routes]
        if cursor is not None and cursor.deployment in deployments:
            deployments = [cursor.deployment]
        if len(deployments) == 1:
            return self._send(request, alias, endpoint, "GET", path, pin=deployments[0])
        return ListAcross(self.store, request, alias, endpoint, path, deployments).start()


class FilesResource(_ObjectResource):
    """``POST /files`` (multipart), ``GET /files``; ``/files/{id}`` below."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return FileResource(self.store, path.decode("utf-8", "replace"))

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        spool = request.upload
        if spool is None:
            return self.error(request, 400, "upload the file as multipart/form-data")
        request.notifyFinish().addBoth(lambda _: spool.close())
        spool.finish()
        if spool.too_large:
            return self.error(request, 413, too_large_message(spool), code="request_too_large")
        if spool.error is not None:
            return self.error(request, 400, spool.error, code="invalid_multipart")
        fields = spool.fields()
        alias = self._named_alias(request, Endpoint.FILES, fields.get("model"))
        if isinstance(alias, bytes):
            return alias
        if not spool.files():
            return self.error(request, 400, "the form has no file", code="missing_file")
        fields.pop("model", None)
        return self._send(request, alias, Endpoint.FILES, "POST", "files", fields, upload=spool)

    def render_GET(self, request: GatewayRequest) -> bytes | int:
        return self._list(request, Endpoint.FILES, "file")


class FileResource(_ObjectResource):
    """``GET`` and ``DELETE /files/{id}``; ``GET /files/{id}/content``."""

    isLeaf = False

    def __init__(self, store: ObjectStore, token: str, content: bool = False) -> None:
        super().__init__(store)
        self.token = token
        self.content = content

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"content" and not self.content:
            return FileResource(self.store, self.token, content=True)
        if path == b"":
            return self
        return super().getChild(path, request)

    def _go(self, request: GatewayRequest, method: str) -> bytes | int:
        ref = self._opened(request, "file", self.token)
        if isinstance(ref, bytes):
            return ref
        path = "files/" + quote(ref.upstream_id, safe="") + ("/content" if self.content else "")
        return self._send(
            request, ref.alias, Endpoint.FILES, method, path, pin=ref.deployment, owner=ref.owner
        )

    def render_GET(self, request: GatewayRequest) -> bytes | int:
        return self._go(request, "GET")

    def render_DELETE(self, request: GatewayRequest) -> bytes | int:
        if self.content:
            return self.error(request, 405, "a file's content cannot be deleted")
        return self._go(request, "DELETE")


class BatchesResource(_ObjectResource):
    """``POST /batches`` (JSON), ``GET /batches``; ``/batches/{id}`` below."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return BatchResource(self.store, path.decode("utf-8", "replace"))

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        try:
            body, _ = parse_body(request)
        except BodyError as e:
            return self.error(request, e.status, e.message, e.type, e.code, e.param)
        token = body.get("input_file_id")
        if not isinstance(token, str):
            return self.error(
                request,
                400,
                "input_file_id is required: the id of an uploaded file",
                param="input_file_id",
            )
        ref = self._opened(request, "file", token)
        if isinstance(ref, bytes):
            return ref
        # A batch runs where its input file is, whatever alias the client names.
        refused = self.refuse_unserved(request, ref.alias, Endpoint.BATCHES)
        if refused is not None:
            return refused
        body = {k: v for k, v in body.items() if k != "model"}
        body["input_file_id"] = ref.upstream_id
        return self._send(
            request,
            ref.alias,
            Endpoint.BATCHES,
            "POST",
            "batches",
            body,
            pin=ref.deployment,
            owner=ref.owner,  # the batch and its output belong to the input file's owner
        )

    def render_GET(self, request: GatewayRequest) -> bytes | int:
        return self._list(request, Endpoint.BATCHES, "batch")


class BatchResource(_ObjectResource):
    """``GET /batches/{id}``, ``POST /batches/{id}/cancel``."""

    def __init__(self, store: ObjectStore, token: str, cancel: bool = False) -> None:
        super().__init__(store)
        self.token = token
        self.cancel = cancel

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"cancel" and not self.cancel:
            return BatchResource(self.store, self.token, cancel=True)
        if path == b"":
            return self
        return super().getChild(path, request)

    def _go(self, request: GatewayRequest, method: str) -> bytes | int:
        ref = self._opened(request, "batch", self.token)
        if isinstance(ref, bytes):
            return ref
        path = "batches/" + quote(ref.upstream_id, safe="") + ("/cancel" if self.cancel else "")
        return self._send(
            request, ref.alias, Endpoint.BATCHES, method, path, pin=ref.deployment, owner=ref.owner
        )

    def render_GET(self, request: GatewayRequest) -> bytes | int:
        if self.cancel:
            return self.error(request, 405, "cancel a batch with POST")
        return self._go(request, "GET")

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        if not self.cancel:
            return self.error(request, 405, "a batch is changed only by POST .../cancel")
        return self._go(request, "POST")


def add_object_routes(api: Any, gateway: Gateway) -> ObjectStore:
    """``/files`` and ``/batches`` under ``api``; the store (its id signer) returned."""
    ids, warning = ObjectIds.from_settings(gateway.router.table.config.general)
    if warning is not None:
        from gatewayd.observability.log import get_logger

        get_logger(__name__).warn("{warning}", warning=warning)
    store = ObjectStore(gateway, ids)
    api.putChild(b"files", FilesResource(store))
    api.putChild(b"batches", BatchesResource(store))
    return store
