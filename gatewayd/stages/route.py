"""The route a pipeline runs around: the router, on the context's alias and call."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail

from gatewayd.observability.log import get_logger
from gatewayd.providers.base import openai_error
from gatewayd.routing import RouteError, RouteResult
from gatewayd.stages.base import RouteContext
from gatewayd.state import StoreUnavailable

log = get_logger("gatewayd.stages")


def store_down(e: StoreUnavailable, attempts: int = 0) -> RouteError:
    log.debug("state store unavailable: {err}", err=str(e))
    return RouteError(
        503,
        openai_error(
            "the shared state store is unavailable and state_store_failure is closed",
            "service_unavailable",
            "state_store_unavailable",
        ),
        attempts,
        retry_after=1.0,
    )


def route_alias(ctx: RouteContext) -> Deferred[RouteResult]:
    """Fires with the :class:`RouteResult`, or fails with :class:`RouteError` or
    :class:`StoreUnavailable` (a closed state store that is down: worded as a 503 by
    :func:`store_down`, where the failure is answered)."""
    try:
        return ctx.gateway.router.route(ctx.alias, ctx.call)
    except StoreUnavailable as e:
        return fail(store_down(e))
