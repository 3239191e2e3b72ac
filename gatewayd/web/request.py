"""The HTTP request class: a bounded body, and what the access log reports."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request, Site

from gatewayd.config.model import GeneralSettings
from gatewayd.log import get_logger
from gatewayd.metrics import GatewayMetrics
from gatewayd.providers.base import openai_error
from gatewayd.web.errors import write_error_object

access_log = Logger(namespace="gatewayd.access")
log = get_logger("gatewayd.web")

_EXPOSED = b"x-gatewayd-model, x-gatewayd-deployment, x-gatewayd-attempts, x-gatewayd-fallback"


class GatewayRequest(Request):
    """A request whose body is dropped, not stored, past the size limit."""

    max_body_size: int = 64 * 1024 * 1024
    # Bodies are JSON: skip Twisted's form parsing, which parses Content-Type with the
    # email package on every POST (a tenth of the per-request CPU when profiled).
    _parsePOSTFormSubmission = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.started = time.monotonic()
        self.too_large = False
        self._body_bytes = 0
        # Filled by the handlers for the access log.
        self.alias: str | None = None
        #: The client's API dialect (chat, responses, messages): a metrics label.
        self.dialect = "chat"
        self.deployment: str | None = None
        self.attempts = 0
        self.fallback: str | None = None
        self.ttfb: float | None = None
        self.bytes_sent = 0
        self.outcome: str | None = None
        self.upstream_seconds: float | None = None  # JSON answers: time spent upstream
        self.logged = False
        site = getattr(self.channel, "site", None)
        if isinstance(site, GatewaySite):
            self.max_body_size = site.settings().max_request_body_size

    def process(self) -> None:
        site = getattr(self.channel, "site", None)
        if isinstance(site, GatewaySite):
            site.active_requests += 1

            def done(_: object) -> None:
                site.active_requests -= 1

            self.notifyFinish().addBoth(done)
            if self._cors(site.settings().cors_allow_origins):
                return  # a preflight, answered here
        super().process()  # type: ignore[no-untyped-call]

    def _cors(self, allowed: tuple[str, ...]) -> bool:
        """Add CORS headers for an allowed ``Origin``; answer a preflight. True if answered."""
        origin = self.getHeader(b"origin")
        if not allowed or origin is None:
            return False
        if "*" not in allowed and origin.decode("latin-1") not in allowed:
            return False
        self.setHeader(b"access-control-allow-origin", b"*" if "*" in allowed else origin)
        self.setHeader(b"vary", b"Origin")
        self.setHeader(b"access-control-expose-headers", _EXPOSED)
        if self.method != b"OPTIONS" or self.getHeader(b"access-control-request-method") is None:
            return False
        self.setResponseCode(204)
        self.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
        wanted = self.getHeader(b"access-control-request-headers")
        self.setHeader(b"access-control-allow-headers", wanted or b"authorization, content-type")
        self.setHeader(b"access-control-max-age", b"600")
        self.finish()
        return True

    def processingFailed(self, reason: Failure) -> Failure:
        """A bug in a handler: logged with its traceback; the client gets OpenAI's shape."""
        log.failure("internal error while handling a request", failure=reason)
        if not self.startedWriting:
            body = write_error_object(
                self, 500, openai_error("internal error in gatewayd", "api_error", "internal_error")
            )
            self.setHeader(b"content-length", b"%d" % len(body))
            self.write(body)
        if not self.finished:
            self.finish()
        return reason

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.max_body_size:
            self.too_large = True
            self.content = io.BytesIO()
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body_size:
            self.too_large = True
            self.content = io.BytesIO()  # let the buffered part go
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def write(self, data: bytes) -> None:
        if self.ttfb is None:
            self.ttfb = time.monotonic() - self.started
        self.bytes_sent += len(data)
        super().write(data)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        finished = self.finished
        site = getattr(self.channel, "site", None)  # the channel is gone after super()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        if not finished and not self.logged:
            if isinstance(site, GatewaySite):
                self.outcome = self.outcome or "client_closed"
                site.log(self)


class GatewaySite(Site):
    """A :class:`Site` with one structured access-log line per request."""

    requestFactory = GatewayRequest

    def __init__(
        self,
        resource: Any,
        settings: Callable[[], GeneralSettings],
        metrics: GatewayMetrics | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(resource, **kw)  # type: ignore[no-untyped-call]
        #: The general settings in force (they change on reload).
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.noisy = False
        #: Requests received and not yet finished (the SIGTERM drain waits on these).
        self.active_requests = 0

    def log(self, request: Any) -> None:
        if not isinstance(request, GatewayRequest) or request.logged:
            return
        request.logged = True
        latency = time.monotonic() - request.started
        status = request.code if request.finished or request.startedWriting else 499
        if request.alias is not None:
            self.metrics.requests.inc(
                request.alias, request.deployment or "-", str(status), request.dialect
            )
            if request.upstream_seconds is not None:
                self.metrics.overhead.observe(max(0.0, latency - request.upstream_seconds))
        access_log.info(
            '{client} "{method} {path}" {status} alias={alias} deployment={deployment} '
            "attempts={attempts} fallback={fallback} latency_ms={latency_ms:.1f} "
            "ttfb_ms={ttfb_ms} bytes={bytes} dialect={dialect}{outcome}",
            client=request.getClientAddress().host
            if hasattr(request.getClientAddress(), "host")
            else "-",
            method=request.method.decode("ascii", "replace"),
            path=request.uri.decode("utf-8", "replace").split("?", 1)[0],
            status=status,
            alias=request.alias or "-",
            deployment=request.deployment or "-",
            attempts=request.attempts,
            fallback=request.fallback or "-",
            latency_ms=latency * 1000.0,
            ttfb_ms="-" if request.ttfb is None else f"{request.ttfb * 1000.0:.1f}",
            bytes=request.bytes_sent,
            dialect=request.dialect,
            outcome=f" outcome={request.outcome}" if request.outcome else "",
        )
