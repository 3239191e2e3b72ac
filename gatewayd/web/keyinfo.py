"""GET /key/info (LiteLLM's path): the caller's own key, its limits, what is left of
them and its spend this period. Never the key itself, never another key."""

from __future__ import annotations

import json
from typing import Any, Protocol

from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd.config.model import GatewayConfig
from gatewayd.limits import Limiter
from gatewayd.state import StoreUnavailable
from gatewayd.web.auth import Caller
from gatewayd.web.errors import write_error


class KeyInfoGateway(Protocol):
    @property
    def limiter(self) -> Limiter: ...


def render_key_info(
    gateway: KeyInfoGateway, config: GatewayConfig, request: Request, caller: Caller
) -> bytes | int:
    """Answers at once for the master key; else when the store has answered."""
    key = caller.key
    if key is None:
        return _json(
            request,
            {
                "key_name": None,
                "info": {
                    "master_key": True,
                    "models": sorted({d.model_name for d in config.deployments}),
                },
            },
        )

    def done(limits: dict[str, Any]) -> None:
        body = _json(
            request,
            {
                "key_name": key.name,
                "info": {
                    "key_name": key.name,
                    "models": list(key.models) if key.models is not None else [],
                    "all_models": key.models is None,
                    "metadata": dict(key.metadata),
                    **limits,
                },
            },
        )
        _finish(request, body)

    def failed(f: Failure) -> None:
        if f.check(StoreUnavailable):
            body = write_error(
                request,
                503,
                "the shared state store is unavailable",
                "service_unavailable",
                "state_store_unavailable",
            )
        else:
            body = write_error(
                request, 500, "internal error in gatewayd", "api_error", "internal_error"
            )
        _finish(request, body)

    gateway.limiter.key_info(key).addCallbacks(done, failed)
    return NOT_DONE_YET


def _json(request: Request, payload: Any) -> bytes:
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode()


def _finish(request: Request, body: bytes) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()
