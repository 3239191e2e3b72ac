"""The resource tree: reads like a route table (see :func:`build_root`).

POST /v1/chat/completions   POST /v1/completions   POST /v1/embeddings
GET  /v1/models             GET  /v1/models/{id}
(the same without /v1)
GET  /health/liveliness  /health/liveness  /health/readiness  /health
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from gatewayd.limits import Limiter, store_health
from gatewayd.log import get_logger
from gatewayd.metrics import GatewayMetrics
from gatewayd.providers.base import Endpoint, ProviderRequest, openai_error
from gatewayd.providers.sse import comment_event, data_event
from gatewayd.routing import RouteError, Router, RouteResult
from gatewayd.web.admission import admitted_route
from gatewayd.web.auth import authenticate, is_authorized
from gatewayd.web.body import BodyError, model_alias, parse_body, stream_flag
from gatewayd.web.errors import write_error, write_error_object, write_unauthorized
from gatewayd.web.keyinfo import render_key_info
from gatewayd.web.relay import StreamRelay
from gatewayd.web.request import GatewayRequest, master_key_for

log = get_logger(__name__)


class Gateway(Protocol):
    """What the web layer needs of the running service."""

    @property
    def router(self) -> Router: ...

    @property
    def ready(self) -> bool: ...

    @property
    def clock(self) -> IReactorTime: ...

    @property
    def metrics(self) -> GatewayMetrics: ...

    @property
    def limiter(self) -> Limiter: ...


def _json(request: Request, payload: Any, status: int = 200) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


class JSONResource(Resource):
    """A resource whose every error (unknown path, wrong method) is OpenAI-shaped."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"" and self.isLeaf is False and not self.children.get(b""):
            return self  # a trailing slash: /v1/models/
        return NotFound()

    def render(self, request: Request) -> bytes | int:
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
            return write_error(
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
        # With a master key, an unknown path must not reveal which paths exist.
        if not is_authorized(request, master_key_for(request)):
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
            request.setHeader(b"www-authenticate", b'Bearer realm="gatewayd"')
            return write_error(
                request,
                401,
                "invalid or missing API key: send it as 'Authorization: Bearer KEY', "
                "'x-api-key' or 'api-key'",
                "authentication_error",
                "invalid_api_key",
            )
        return super().render(request)


class CompletionResource(AuthedResource):
    """POST chat/completions, completions, embeddings: parse, route, answer or stream."""

    isLeaf = True

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        super().__init__(gateway)
        self.endpoint = endpoint

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        try:
            body, raw = parse_body(request)
            alias = model_alias(body)
            stream = stream_flag(body)
        except BodyError as e:
            return write_error(request, e.status, e.message, e.type, e.code, e.param)
        router = self.gateway.router
        if alias not in router.table.routes:
            return write_error(
                request,
                404,
                f"The model '{alias}' does not exist or is not configured on this gateway",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        if not request.caller.allows(alias):
            return write_error(
                request,
                403,
                f"this key may not use the model '{alias}'",
                "permission_error",
                "model_not_allowed",
                "model",
            )
        if stream and self.endpoint is Endpoint.EMBEDDINGS:
            stream = False
        request.alias = alias
        log.debug(
            "{endpoint} for {alias}: {body}",
            endpoint=self.endpoint.value,
            alias=alias,
            body=raw[:2000].decode("utf-8", "replace"),  # the body carries no keys
        )
        call = ProviderRequest(
            self.endpoint, body, bool(stream), request.upstream_headers(), request.trace
        )
        Exchange(self.gateway, request, alias, call)
        return NOT_DONE_YET


class Exchange:
    """One routed request: waits for the router, then answers or relays the stream.

    A client disconnect at any point cancels the routing (and with it the upstream)."""

    def __init__(
        self, gateway: Gateway, request: GatewayRequest, alias: str, call: ProviderRequest
    ) -> None:
        self.request = request
        self.alias = alias
        self.call = call
        self.metrics = gateway.metrics
        self.gone = False
        self.heartbeat: LoopingCall | None = None
        self.committed = False  # headers sent (heartbeats): errors must go in-band
        g = gateway.router.table.config.general
        self.deferred = admitted_route(gateway, request, alias, call)
        request.notifyFinish().addErrback(self._lost)
        if call.stream and g.stream_heartbeat_interval > 0 and not self.deferred.called:
            self._start_heartbeat(gateway.clock, g.stream_heartbeat_interval)
        self.deferred.addCallbacks(self._routed, self._failed)
        self.deferred.addErrback(self._bug)

    def _lost(self, _: Failure) -> None:
        self.gone = True
        self._stop_heartbeat()
        self.deferred.cancel()

    def _start_heartbeat(self, clock: IReactorTime, interval: float) -> None:
        self._sse_headers()
        self.committed = True
        self.request.write(comment_event("gatewayd: waiting for upstream"))
        self.heartbeat = LoopingCall(lambda: self.request.write(comment_event("keepalive")))
        self.heartbeat.clock = clock
        self.heartbeat.start(interval, now=False)

    def _stop_heartbeat(self) -> None:
        if self.heartbeat is not None and self.heartbeat.running:
            self.heartbeat.stop()

    def _sse_headers(self) -> None:
        r = self.request
        r.setResponseCode(200)
        r.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        r.setHeader(b"cache-control", b"no-cache")
        r.setHeader(b"x-accel-buffering", b"no")

    def _describe(self, result: RouteResult) -> None:
        r = self.request
        r.deployment = result.deployment
        r.attempts = result.attempts
        r.fallback = result.fallback
        if self.committed:
            return
        r.setHeader(b"x-gatewayd-model", result.alias.encode())
        r.setHeader(b"x-gatewayd-deployment", result.deployment.encode())
        r.setHeader(b"x-gatewayd-attempts", str(result.attempts).encode())
        if result.fallback:
            r.setHeader(b"x-gatewayd-fallback", result.fallback.encode())
        for name, value in result.response.headers:
            if not r.responseHeaders.hasHeader(name):
                r.responseHeaders.addRawHeader(name, value)

    def _routed(self, result: RouteResult) -> None:
        self._stop_heartbeat()
        response = result.response
        if self.gone:  # raced with a disconnect
            if response.stream is not None:
                response.stream.cancel()
            result.finish(None)
            return
        self._describe(result)
        r = self.request
        if response.stream is None:
            if self.committed:  # heartbeats went out as SSE; the answer cannot be JSON now
                r.write(data_event({"error": openai_error("upstream answered without streaming")}))
            else:
                body = response.body or b""
                self.metrics.count_usage(self.alias, result.deployment, response.usage)
                if result.attempts == 1:  # overhead is only clean without retries
                    r.upstream_seconds = result.upstream_seconds
                r.setResponseCode(response.status)
                r.setHeader(b"content-type", b"application/json")
                r.setHeader(b"content-length", str(len(body)).encode())
                r.write(body)
            r.finish()
            return
        if not self.committed:
            self._sse_headers()
        StreamRelay(r, response.stream, result.finish, self.metrics, self.alias).begin()

    def _failed(self, failure: Failure) -> None:
        self._stop_heartbeat()
        if self.gone:
            return
        r = self.request
        err = failure.value
        if not isinstance(err, RouteError):
            failure.raiseException()
        assert isinstance(err, RouteError)
        r.attempts = err.attempts
        r.deployment = err.deployment
        if self.committed:
            r.write(data_event({"error": err.error}))
        else:
            r.setHeader(b"x-gatewayd-attempts", str(err.attempts).encode())
            for name, value in err.headers:
                r.setHeader(name, value)
            if err.retry_after is not None and err.status in (429, 503, 529):
                # An upstream's 0 (or less) would tell clients to hammer: at least 1 s.
                r.setHeader(b"retry-after", b"%d" % max(1, math.ceil(err.retry_after)))
            body = write_error_object(r, err.status, err.error)
            r.setHeader(b"content-length", str(len(body)).encode())
            r.write(body)
        r.finish()

    def _bug(self, failure: Failure) -> None:
        if failure.check(Exception) and not self.gone:
            log.failure("internal error while handling a request", failure)
            r = self.request
            if r.finished:
                return
            error = openai_error("internal error in gatewayd", "api_error", "internal_error")
            if not r.startedWriting:
                r.write(write_error_object(r, 500, error))
            else:  # headers already went out (heartbeats): say it in-band
                r.write(data_event({"error": error}))
            r.finish()


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


class Liveness(JSONResource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return _json(request, {"status": "alive"})


class Readiness(JSONResource):
    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render_GET(self, request: Request) -> bytes:
        if not self.gateway.ready:
            return _json(request, {"status": "not ready"}, 503)
        return _json(request, {"status": "ready", "models": len(self.gateway.router.table.routes)})


class Health(JSONResource):
    """GET /health: each alias, its deployments and their state. No secrets."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render_GET(self, request: Request) -> bytes:
        router = self.gateway.router
        now = router.health.now()
        aliases: dict[str, Any] = {}
        healthy_total = 0
        for alias, routes in router.table.routes.items():
            deps = []
            for route in routes:
                d = route.deployment
                state = router.health.get(d.id).snapshot(now)
                healthy_total += state["state"] == "healthy"
                deps.append({"id": d.id, "provider": d.provider.prefix, "model": d.model, **state})
            aliases[alias] = {
                "deployments": deps,
                "fallbacks": list(router.table.fallbacks_for(alias)),
            }
        status = "healthy" if healthy_total else "unhealthy"
        body = {"status": status, "ready": self.gateway.ready, "models": aliases}
        body["state_store"] = store_health(self.gateway.limiter)
        return _json(request, body)


class KeyInfo(AuthedResource):
    """GET /key/info: the caller's own key (see :mod:`gatewayd.web.keyinfo`)."""

    isLeaf = True

    def render_GET(self, request: GatewayRequest) -> bytes | int:
        return render_key_info(
            self.gateway, self.gateway.router.table.config, request, request.caller
        )


class Metrics(JSONResource):
    """GET /metrics: Prometheus text format (OpenMetrics when asked); open unless
    ``require_auth_for_metrics_endpoint`` is set."""

    isLeaf = True

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render_GET(self, request: Request) -> bytes:
        general = self.gateway.router.table.config.general
        if general.require_auth_for_metrics_endpoint and not is_authorized(
            request, general.master_key
        ):
            return write_error(
                request,
                401,
                "metrics require the master key",
                "authentication_error",
                "invalid_api_key",
            )
        accept = request.getHeader(b"accept")
        body, ctype = self.gateway.metrics.exposition(accept.decode("latin-1") if accept else None)
        request.setHeader(b"content-type", ctype.encode())
        return body


def build_root(gateway: Gateway) -> Resource:
    """The whole tree, ``/v1`` and bare paths alike."""
    created = int(time.time())
    api = JSONResource()
    chat = JSONResource()
    chat.putChild(b"completions", CompletionResource(gateway, Endpoint.CHAT))
    api.putChild(b"chat", chat)
    api.putChild(b"completions", CompletionResource(gateway, Endpoint.COMPLETIONS))
    api.putChild(b"embeddings", CompletionResource(gateway, Endpoint.EMBEDDINGS))
    api.putChild(b"models", ModelsResource(gateway, created))

    health = Health(gateway)
    health.putChild(b"liveliness", Liveness())
    health.putChild(b"liveness", Liveness())
    health.putChild(b"readiness", Readiness(gateway))

    root = JSONResource()
    root.putChild(b"v1", api)
    for name, child in api.children.items():
        root.putChild(name, child)
    key = JSONResource()
    key.putChild(b"info", KeyInfo(gateway))
    root.putChild(b"key", key)
    api.putChild(b"key", key)
    root.putChild(b"health", health)
    root.putChild(b"metrics", Metrics(gateway))
    return root
