"""One routed request: waits for the router, then answers or relays the stream,
worded in the client's dialect by an :class:`~gatewayd.web.answers.Answer`."""

from __future__ import annotations

import math
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from gatewayd.limits import Limiter, Spent
from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.providers.base import Endpoint, ProviderRequest, openai_error
from gatewayd.routing import RouteError, Router, RouteResult
from gatewayd.stages import Pipeline, RouteContext, route_alias
from gatewayd.stages.route import store_down
from gatewayd.state import StoreUnavailable
from gatewayd.upstream.sse import comment_event
from gatewayd.web.answers import Answer
from gatewayd.web.errors import set_status
from gatewayd.web.headers import (
    CACHE_CONTROL,
    CONTENT_LENGTH,
    CONTENT_TYPE,
    X_ACCEL_BUFFERING,
    X_GATEWAYD_ATTEMPTS,
    X_GATEWAYD_DEPLOYMENT,
    X_GATEWAYD_MODEL,
    header_value,
)
from gatewayd.web.relay import StreamRelay
from gatewayd.web.request import GatewayRequest

log = get_logger("gatewayd.web.resources")


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

    @property
    def pipeline(self) -> Pipeline: ...


def write_json_error(
    request: GatewayRequest, answer: Answer, status: int, error: dict[str, Any]
) -> bytes:
    """Set the status and JSON headers; the error body in the answer's dialect."""
    set_status(request, status)
    request.setHeader(b"content-type", b"application/json")
    return answer.error(status, error)


def upstream_call(
    request: GatewayRequest, endpoint: Endpoint, body: dict[str, Any], stream: bool, **kw: Any
) -> ProviderRequest:
    """The :class:`ProviderRequest` for ``request``: with what every attempt carries
    upstream (the request id, the client's trace context) and its trace; ``kw``: the
    other fields."""
    return ProviderRequest(endpoint, body, stream, request.upstream_headers(), request.trace, **kw)


class Exchange:
    """One routed request: waits for the router, then answers or relays the stream.

    A client disconnect at any point cancels the routing (and with it the upstream)."""

    def __init__(
        self,
        gateway: Gateway,
        request: GatewayRequest,
        alias: str,
        call: ProviderRequest,
        answer: Answer | None = None,
    ) -> None:
        """``call``: made by :func:`upstream_call`."""
        self.request = request
        self.alias = alias
        self.call = call
        self.answer = answer or Answer()
        request.dialect = self.answer.dialect.value
        self.metrics = gateway.metrics
        self.gone = False
        self.heartbeat: LoopingCall | None = None
        self.committed = False  # headers sent (heartbeats): errors must go in-band
        g = gateway.router.table.config.general
        self.ctx = RouteContext(gateway, request, alias, call)
        self.deferred = gateway.pipeline.run(self.ctx, route_alias)
        request.on_lost = self._lost
        if call.stream and g.stream_heartbeat_interval > 0 and not self.deferred.called:
            self._start_heartbeat(gateway.clock, g.stream_heartbeat_interval)
        self.deferred.addCallbacks(self._routed, self._failed)
        self.deferred.addErrback(self._bug)

    def _lost(self) -> None:
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
        r.put_header(CONTENT_TYPE, b"text/event-stream; charset=utf-8")
        r.put_header(CACHE_CONTROL, b"no-cache")
        r.put_header(X_ACCEL_BUFFERING, b"no")

    def _describe(self, result: RouteResult) -> None:
        r = self.request
        r.deployment = result.deployment
        r.attempts = result.attempts
        r.fallback = result.fallback
        r.hedge = result.hedge
        if self.committed:
            return
        r.put_header(X_GATEWAYD_MODEL, header_value(result.alias))
        r.put_header(X_GATEWAYD_DEPLOYMENT, header_value(result.deployment))
        r.put_header(X_GATEWAYD_ATTEMPTS, b"%d" % result.attempts)
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
                error = openai_error("upstream answered without streaming")
                r.write(self.answer.stream_error(502, error))
            else:
                body = self.answer.body(response, result.deployment)
                if not r.cached:  # a cached answer's tokens were counted when it was made
                    spent = Spent.from_usage(response.usage)
                    if spent is not None:
                        self.metrics.count_usage(
                            self.alias, result.deployment, spent.prompt, spent.completion
                        )
                if result.attempts == 1:  # overhead is only clean without retries
                    r.upstream_seconds = result.upstream_seconds
                r.setResponseCode(response.status)
                r.put_header(CONTENT_TYPE, b"application/json")
                r.put_header(CONTENT_LENGTH, b"%d" % len(body))
                r.write(body)
            r.finish()
            return
        if not self.committed:
            self._sse_headers()
        stage = self.answer.stage(response, result.deployment)
        StreamRelay(
            r, response.stream, result.finish, self.metrics, self.alias, stage, self.ctx.taps
        ).begin()

    def _failed(self, failure: Failure) -> None:
        self._stop_heartbeat()
        if self.gone:
            return
        r = self.request
        err = failure.value
        if isinstance(err, StoreUnavailable):  # a closed state store that is down
            err = store_down(err)
        if not isinstance(err, RouteError):
            failure.raiseException()
        assert isinstance(err, RouteError)
        r.attempts = err.attempts
        r.deployment = err.deployment
        if self.committed:
            r.write(self.answer.stream_error(err.status, err.error))
        else:
            r.setHeader(b"x-gatewayd-attempts", str(err.attempts).encode())
            for name, value in err.headers:  # x-ratelimit-* of the gateway's own 429
                r.setHeader(name, value)
            if err.retry_after is not None and err.status in (429, 503, 529):
                # An upstream's 0 (or less) would tell clients to hammer: at least 1 s.
                r.setHeader(b"retry-after", b"%d" % max(1, math.ceil(err.retry_after)))
            body = write_json_error(r, self.answer, err.status, err.error)
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
                r.write(write_json_error(r, self.answer, 500, error))
            else:  # headers already went out (heartbeats): say it in-band
                r.write(self.answer.stream_error(500, error))
            r.finish()
