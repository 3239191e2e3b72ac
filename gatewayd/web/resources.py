"""The resource tree: reads like a route table (see :func:`build_root`).

POST /v1/chat/completions   POST /v1/completions   POST /v1/embeddings
POST /v1/messages           POST /v1/messages/count_tokens        (web/messages.py)
POST /v1/responses          GET|DELETE /v1/responses/{id}  POST .../cancel  (web/responses.py)
POST /v1/audio/speech  /v1/images/generations  /v1/moderations  /v1/rerank  /v2/rerank
POST /v1/audio/transcriptions  /v1/audio/translations  /v1/images/edits  /v1/images/variations
                                                                            (web/media.py)
GET  /v1/models             GET  /v1/models/{id}
(the same without /v1)
GET  /health/liveliness  /health/liveness  /health/readiness  /health
"""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from gatewayd.dialects import Dialect
from gatewayd.log import get_logger, is_verbose
from gatewayd.providers.base import Endpoint, openai_error
from gatewayd.providers.capabilities import endpoint_name
from gatewayd.web.answers import Answer
from gatewayd.web.auth import authenticate, is_authorized
from gatewayd.web.body import BodyError, model_alias, parse_body, stream_flag
from gatewayd.web.errors import unauthorized, write_error, write_unauthorized
from gatewayd.web.exchange import Exchange, Gateway, upstream_call, write_json_error
from gatewayd.web.keyinfo import render_key_info
from gatewayd.web.request import GatewayRequest, master_key_for
from gatewayd.web.serving import unserved_message

log = get_logger(__name__)


def _json(request: Request, payload: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


class JSONResource(Resource):
    """A resource whose every error (unknown path, wrong method) is in its dialect's
    shape (OpenAI's unless ``answer`` says otherwise)."""

    answer = Answer()
    #: The dialect of this path (the ``dialect`` metrics label and access-log field).
    dialect = Dialect.CHAT

    def error(
        self,
        request: Request,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> bytes:
        """Set the status and JSON headers; return the error body to write."""
        assert isinstance(request, GatewayRequest)
        return write_json_error(
            request, self.answer, status, openai_error(message, type, code, param)
        )

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"" and self.isLeaf is False and not self.children.get(b""):
            return self  # a trailing slash: /v1/models/
        return NotFound()

    def render(self, request: Request) -> bytes | int:
        if isinstance(request, GatewayRequest):
            request.dialect = self.dialect.value
        method = request.method.decode("ascii", "replace")
        # Twisted's Resource answers HEAD with render_GET: only where there is one.
        lookup = "GET" if method == "HEAD" else method
        if not hasattr(self, "render_" + lookup):
            allowed = sorted(
                m[len("render_") :]
                for m in dir(self)
                if m.startswith("render_") and m != "render_HEAD"
            )
            if not allowed:  # a node of the tree (/v1, /v1/chat), not an endpoint
                return NotFound().render(request)
            request.setHeader(b"allow", ", ".join(allowed).encode())
            return self.error(
                request,
                405,
                f"method {method} is not allowed on {request.path.decode('utf-8', 'replace')}",
                "invalid_request_error",
                "method_not_allowed",
            )
        result: bytes | int = super().render(request)  # type: ignore[no-untyped-call]
        return result


@implementer(IResource)
class NotFound(JSONResource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        # With a master key or client keys, an unknown path must not reveal which paths
        # exist: the caller is authenticated as on the API paths first.
        root = getattr(getattr(request, "site", None), "resource", None)
        if isinstance(root, Root):
            if authenticate(request, root.gateway.router.table.config) is None:
                return write_unauthorized(request)
        elif not is_authorized(request, master_key_for(request)):
            return write_unauthorized(request)
        return write_error(
            request,
            404,
            f"unknown path {request.path.decode('utf-8', 'replace')}",
            "invalid_request_error",
            "not_found",
        )


class AuthedResource(JSONResource):
    """Answers 401 unless the master key was presented."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render(self, request: Request) -> bytes | int:
        caller = authenticate(request, self.gateway.router.table.config)
        if isinstance(request, GatewayRequest) and caller is not None:
            request.caller, request.key_name = caller, caller.name
        if caller is None:
            assert isinstance(request, GatewayRequest)
            return write_json_error(request, self.answer, 401, unauthorized(request))
        return super().render(request)


class RoutedResource(AuthedResource):
    """A POST whose JSON body names an alias: parsed the same for every dialect."""

    isLeaf = True

    def parse(self, request: GatewayRequest, endpoint: str) -> tuple[dict[str, Any], bool] | bytes:
        """The body and its ``stream`` flag, with ``request.alias`` set; or the error body
        (in this resource's dialect) to answer with."""
        try:
            body, raw = parse_body(request)
            alias = model_alias(body)
            stream = stream_flag(body)
        except BodyError as e:
            return self.error(request, e.status, e.message, e.type, e.code, e.param)
        refused = self.admit_alias(request, alias)
        if refused is not None:
            return refused
        if is_verbose():  # the slice and decode cost on every request otherwise
            log.debug(
                "{endpoint} for {alias}: {body}",
                endpoint=endpoint,
                alias=alias,
                body=raw[:2000].decode("utf-8", "replace"),  # the body carries no keys
            )
        return body, stream

    def admit_alias(self, request: GatewayRequest, alias: str) -> bytes | None:
        """Set ``request.alias``, or the error body when the alias is unknown (404) or
        not the caller's to use (403)."""
        if alias not in self.gateway.router.table.routes:
            return self.error(
                request,
                404,
                f"The model '{alias}' does not exist or is not configured on this gateway",
                "not_found_error" if self.dialect is Dialect.MESSAGES else "invalid_request_error",
                "model_not_found",
                "model",
            )
        if not request.caller.allows(alias):
            return self.error(
                request,
                403,
                f"this key may not use the model '{alias}'",
                "permission_error",
                "model_not_allowed",
                "model",
            )
        request.alias = alias
        return None

    def refuse_unserved(
        self, request: GatewayRequest, alias: str, endpoint: Endpoint
    ) -> bytes | None:
        """The 400 body when no deployment of ``alias`` serves ``endpoint``; else None."""
        why = unserved_message(self.gateway.router, alias, endpoint)
        if why is None:
            return None
        return self.error(request, 400, why, code="endpoint_not_supported", param="model")

    def drop_params(self) -> bool:
        return self.gateway.router.table.config.general.drop_params


class CompletionResource(RoutedResource):
    """POST chat/completions, completions, embeddings: parse, route, answer or stream."""

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        super().__init__(gateway)
        self.endpoint = endpoint

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        parsed = self.parse(request, self.endpoint.value)
        if isinstance(parsed, bytes):
            return parsed
        body, stream = parsed
        if stream and self.endpoint is Endpoint.EMBEDDINGS:
            stream = False
        assert request.alias is not None
        refused = self.refuse_unserved(request, request.alias, self.endpoint)
        if refused is not None:
            return refused
        request.endpoint = endpoint_name(self.endpoint)
        call = upstream_call(request, self.endpoint, body, stream, drop_params=self.drop_params())
        Exchange(self.gateway, request, request.alias, call)
        return NOT_DONE_YET


class ModelsResource(AuthedResource):
    """GET /v1/models and /v1/models/{id}: the aliases clients may send."""

    def __init__(self, gateway: Gateway, created: int) -> None:
        super().__init__(gateway)
        self.created = created

    def _model(self, alias: str) -> dict[str, Any]:
        return {"id": alias, "object": "model", "created": self.created, "owned_by": "gatewayd"}

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return ModelResource(self, path.decode("utf-8", "replace"))

    def render_GET(self, request: Request) -> bytes:
        caller = getattr(request, "caller", None)
        aliases = [
            a for a in self.gateway.router.table.routes if caller is None or caller.allows(a)
        ]
        return _json(request, {"object": "list", "data": [self._model(a) for a in aliases]})


class ModelResource(AuthedResource):
    def __init__(self, parent: ModelsResource, alias: str) -> None:
        super().__init__(parent.gateway)
        self.models = parent
        self.alias = alias

    def getChild(self, path: bytes, request: Request) -> IResource:
        # Model ids may contain slashes (ai/smollm2): rebuild the whole id.
        if path:
            return ModelResource(self.models, f"{self.alias}/{path.decode('utf-8', 'replace')}")
        return self

    def render_GET(self, request: Request) -> bytes:
        caller = getattr(request, "caller", None)
        if self.alias not in self.gateway.router.table.routes or (
            caller is not None and not caller.allows(self.alias)
        ):
            return write_error(
                request,
                404,
                f"The model '{self.alias}' does not exist",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return _json(request, self._model_obj())

    def _model_obj(self) -> dict[str, Any]:
        return self.models._model(self.alias)


class KeyInfo(AuthedResource):
    """GET /key/info: the caller's own key (see :mod:`gatewayd.web.keyinfo`)."""

    isLeaf = True

    def render_GET(self, request: GatewayRequest) -> bytes | int:
        return render_key_info(
            self.gateway, self.gateway.router.table.config, request, request.caller
        )


class Root(JSONResource):
    """The root of the tree: knows the gateway, for :class:`NotFound`'s authentication."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway


def build_root(gateway: Gateway) -> Resource:
    """The whole tree, ``/v1`` and bare paths alike."""
    # The dialects' resources build on the ones above.
    from gatewayd.dialects.store import MemoryResponseStore, ResponseStore
    from gatewayd.web.health import Health, Liveness, Metrics, Readiness
    from gatewayd.web.media import add_media_routes
    from gatewayd.web.messages import MessagesResource
    from gatewayd.web.responses import ResponsesResource

    created = int(time.time())
    # The Responses store outlives reloads: the tree is built once.
    general = gateway.router.table.config.general
    local = MemoryResponseStore(gateway.clock, general.response_store_max_bytes)
    store: ResponseStore = local
    if general.state_store is not None:  # shared by every instance (Redis)
        from gatewayd.state.failover import FailoverStore
        from gatewayd.state.responses import SharedResponseStore

        shared = gateway.limiter.store
        # Straight to Redis: when it is down the bounded local copy answers instead.
        if isinstance(shared, FailoverStore):
            shared = shared.primary
        store = SharedResponseStore(shared, local)
    api = JSONResource()
    chat = JSONResource()
    chat.putChild(b"completions", CompletionResource(gateway, Endpoint.CHAT))
    api.putChild(b"chat", chat)
    api.putChild(b"completions", CompletionResource(gateway, Endpoint.COMPLETIONS))
    api.putChild(b"embeddings", CompletionResource(gateway, Endpoint.EMBEDDINGS))
    api.putChild(b"models", ModelsResource(gateway, created))
    api.putChild(b"messages", MessagesResource(gateway))
    api.putChild(b"responses", ResponsesResource(gateway, store))
    add_media_routes(api, gateway)

    health = Health(gateway)
    health.putChild(b"liveliness", Liveness())
    health.putChild(b"liveness", Liveness())
    health.putChild(b"readiness", Readiness(gateway))

    root = Root(gateway)
    root.putChild(b"v1", api)
    for name, child in api.children.items():
        root.putChild(name, child)
    key = JSONResource()
    key.putChild(b"info", KeyInfo(gateway))
    root.putChild(b"key", key)
    api.putChild(b"key", key)
    root.putChild(b"health", health)
    root.putChild(b"metrics", Metrics(gateway))
    v2 = JSONResource()  # Cohere's v2 path of rerank
    v2.putChild(b"rerank", api.children[b"rerank"])
    root.putChild(b"v2", v2)
    return root
