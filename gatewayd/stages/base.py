"""The seam around a routed request: a :class:`Stage` and the :class:`RouteContext`
it works on.

A stage's :meth:`~Stage.before` runs before routing, in list order, and may answer
early (return a :class:`~gatewayd.routing.RouteResult`: a cache hit) or refuse (raise
:class:`~gatewayd.routing.RouteError`: over a limit). Its :meth:`~Stage.after` runs
once the answer is complete (a JSON answer when routed, a stream when it ended), in
reverse order, for every stage whose ``before`` went on or answered (a stage whose
``before`` refused, or was cancelled while it waited, settles that itself). A stage that needs a stream's
events adds a :class:`StreamTap` to :attr:`RouteContext.taps` in ``before``: the one
relay to the client feeds it each block of events as it writes them, unbuffered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from gatewayd.limits import Limiter
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.providers.base import ProviderRequest
from gatewayd.routing import Router, RouteResult


class StagedGateway(Protocol):
    """What stages need of the running service."""

    @property
    def router(self) -> Router: ...

    @property
    def metrics(self) -> GatewayMetrics: ...

    @property
    def limiter(self) -> Limiter: ...

    @property
    def clock(self) -> IReactorTime: ...


class ClientRequest(Protocol):
    """What stages may read and set on the client's request
    (:class:`gatewayd.web.request.GatewayRequest`)."""

    caller: Any
    key_name: str | None
    deployment: str | None
    started: float
    code: int
    usage: dict[str, Any] | None
    finished: int
    #: Answered from the response cache (the access line says so).
    cached: bool

    def getHeader(self, key: bytes | str) -> bytes | str | None: ...

    def setHeader(self, name: bytes | str, value: bytes | str) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...


class StreamTap(Protocol):
    """Sees a relayed stream's events as they pass (never holding them up)."""

    def event(self, data: bytes) -> None:
        """One or more complete SSE events, as the upstream's reader delivered them."""

    def end(self, complete: bool) -> None:
        """The stream is over: ``complete`` when it ended cleanly with its end marker."""


class RouteContext:
    """One routed request as its stages see it."""

    __slots__ = ("alias", "cached", "call", "gateway", "request", "route", "scratch", "taps")

    def __init__(
        self, gateway: StagedGateway, request: ClientRequest, alias: str, call: ProviderRequest
    ) -> None:
        self.gateway = gateway
        self.request = request
        self.alias = alias
        #: What goes upstream (a stage may replace it: a body field stripped).
        self.call = call
        #: Stream taps added by stages (see :class:`StreamTap`).
        self.taps: list[StreamTap] = []
        #: Answered from a cache: no spend, no token budget (the limits stage reads it).
        self.cached = False
        #: Per-stage scratch space, keyed by the stage's own choosing.
        self.scratch: dict[Any, Any] = {}
        #: The route the pipeline runs around (set by :meth:`Pipeline.run`): a stage
        #: that answers by routing itself (the cache, coalescing a miss) calls this one.
        self.route: Route | None = None


#: What :meth:`Stage.before` returns: go on (None), an early answer, or either later.
Before = RouteResult | None | Deferred[RouteResult | None]


class Stage(Protocol):
    """One step around routing (see the module docstring)."""

    def before(self, ctx: RouteContext) -> Before:
        """Go on (None), answer early (a RouteResult) or refuse (raise RouteError)."""

    def after(self, ctx: RouteContext, result: RouteResult | None, failure: Failure | None) -> None:
        """The request is complete: with its result, or the failure that ended it."""


#: The route call the pipeline wraps: fires with the RouteResult or fails.
Route = Callable[[RouteContext], "Deferred[RouteResult]"]
