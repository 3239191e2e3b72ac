"""The resource tree: reads like a route table (see :func:`build_root`).

POST /v1/chat/completions   POST /v1/completions   POST /v1/embeddings
POST /v1/messages           POST /v1/messages/count_tokens        (web/messages.py)
POST /v1/responses          GET|DELETE /v1/responses/{id}  POST .../cancel  (web/responses.py)
POST /v1/audio/speech  /v1/images/generations  /v1/moderations  /v1/rerank  /v2/rerank
POST /v1/audio/transcriptions  /v1/audio/translations  /v1/images/edits  /v1/images/variations
                                                                            (web/media.py)
POST|GET /v1/files  GET|DELETE /v1/files/{id}  GET .../content
POST|GET /v1/batches  GET /v1/batches/{id}  POST .../cancel                 (web/objects.py)
GET  /v1/models             GET  /v1/models/{id}
(the same without /v1)
GET  /health/liveliness  /health/liveness  /health/readiness  /health
GET  /ui ...  the operator console and its API /ui/api/... (gatewayd.console)
"""

from __future__ import annotations

import time
from typing import Any, cast

from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd.observability.log import get_logger
from gatewayd.providers.base import Endpoint
from gatewayd.providers.capabilities import endpoint_name
from gatewayd.routing.wildcard import WildcardRoutes, is_pattern
from gatewayd.web.errors import write_error
from gatewayd.web.exchange import Exchange, Gateway, upstream_call
from gatewayd.web.keyinfo import render_key_info
from gatewayd.web.request import GatewayRequest
from gatewayd.web.resource_kinds import (
    AuthedResource,
    JSONResource,
    Root,
    RoutedResource,
    json_body,
)

log = get_logger(__name__)


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
        routes = self.gateway.router.table.routes
        # Wildcard aliases show the models their upstreams listed, never the pattern.
        names = [a for a in routes if not is_pattern(a)]
        if isinstance(routes, WildcardRoutes):
            names = list(dict.fromkeys(names + routes.discovered()))
        aliases = [a for a in names if caller is None or caller.allows(a)]
        return json_body(request, {"object": "list", "data": [self._model(a) for a in aliases]})


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
        return json_body(request, self._model_obj())

    def _model_obj(self) -> dict[str, Any]:
        return self.models._model(self.alias)


class KeyInfo(AuthedResource):
    """GET /key/info: the caller's own key (see :mod:`gatewayd.web.keyinfo`)."""

    isLeaf = True

    def render_GET(self, request: GatewayRequest) -> bytes | int:
        return render_key_info(
            self.gateway, self.gateway.router.table.config, request, request.caller
        )


def build_root(gateway: Gateway) -> Resource:
    """The whole tree, ``/v1`` and bare paths alike."""
    # The dialects' resources build on the ones above.
    from gatewayd.dialects.store import MemoryResponseStore, ResponseStore
    from gatewayd.web.health import Health, Liveness, Metrics, Readiness
    from gatewayd.web.media import add_media_routes
    from gatewayd.web.messages import MessagesResource
    from gatewayd.web.objects import add_object_routes
    from gatewayd.web.responses import ResponsesResource

    created = int(time.time())
    # The Responses store outlives reloads: the tree is built once.
    general = gateway.router.table.config.general
    local = MemoryResponseStore(gateway.clock, general.response_store_max_bytes)
    store: ResponseStore = local
    if general.state_store is not None:  # shared by every instance (Redis)
        from gatewayd.dialects.shared_store import SharedResponseStore
        from gatewayd.state.failover import FailoverStore

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
    add_object_routes(api, gateway)

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
    if general.ui:  # the operator console (read at start: the tree is built once)
        from gatewayd.console.pages import ConsoleRoot
        from gatewayd.web.auth import MASTER

        playground = {
            b"chat": chat.children[b"completions"],
            b"messages": api.children[b"messages"],
            b"responses": api.children[b"responses"],
        }
        root.putChild(b"ui", ConsoleRoot(cast(Any, gateway), playground, MASTER))
    v2 = JSONResource()  # Cohere's v2 path of rerank
    v2.putChild(b"rerank", api.children[b"rerank"])
    root.putChild(b"v2", v2)
    return root
