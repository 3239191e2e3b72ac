"""The route a pipeline runs around: the router, on the context's alias and call."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

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


def _store_failure(failure: Failure) -> Failure:
    if isinstance(failure.value, StoreUnavailable):
        return Failure(store_down(failure.value))
    return failure


def route_alias(ctx: RouteContext) -> Deferred[RouteResult]:
    """Fires with the :class:`RouteResult`, or fails with :class:`RouteError` (a closed
    state store that is down: 503)."""
    try:
        d = ctx.gateway.router.route(ctx.alias, ctx.call)
    except StoreUnavailable as e:
        return fail(store_down(e))
    return d.addErrback(_store_failure)
