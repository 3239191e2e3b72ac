"""The kinds of resource the tree is made of: JSON answers, 404s, the auth check, and
a routed endpoint's request parsing. :mod:`gatewayd.web.resources` assembles the tree."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from gatewayd.dialects import Dialect
from gatewayd.observability.log import get_logger, is_verbose
from gatewayd.providers.base import Endpoint, openai_error
from gatewayd.web.answers import Answer
from gatewayd.web.auth import authenticate, is_authorized
from gatewayd.web.body import BodyError, model_alias, parse_body, stream_flag
from gatewayd.web.errors import unauthorized, write_error, write_unauthorized
from gatewayd.web.exchange import Gateway, write_json_error
from gatewayd.web.request import GatewayRequest, master_key_for
from gatewayd.web.serving import unserved_message

log = get_logger("gatewayd.web.resources")


def json_body(request: Request, payload: Any, status: int = 200) -> bytes:
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


class Root(JSONResource):
    """The root of the tree: knows the gateway, for :class:`NotFound`'s authentication."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway


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
        caller = getattr(request, "caller", None)
        if caller is None:  # (set already: the console's playground, after its own check)
            caller = authenticate(request, self.gateway.router.table.config)
        if isinstance(request, GatewayRequest) and caller is not None:
            request.caller, request.key_name = caller, caller.name
        if caller is None:
            assert isinstance(request, GatewayRequest)
            return write_json_error(request, self.answer, 401, unauthorized(request))
        return super().render(request)


#: The routed endpoints by the path :meth:`RoutedResource.parse` is told.
_BY_PATH = {e.value: e for e in Endpoint}


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
        served = _BY_PATH.get(endpoint)  # every dialect: a 400 when no deployment serves it
        refused = self.admit_alias(request, alias) or (
            None if served is None else self.refuse_unserved(request, alias, served)
        )
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
