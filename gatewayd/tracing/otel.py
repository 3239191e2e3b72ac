"""OpenTelemetry traces with the GenAI semantic conventions (the ``otel`` extra).

Loaded by :func:`gatewayd.tracing.setup.build_tracing` only when tracing is configured. Spans
go through a :class:`BatchSpanProcessor`: a bounded queue drained by the SDK's own
thread, so exporting never blocks the reactor and a dead collector costs dropped spans,
never unbounded memory. The tracer provider is ours, not the global one: an embedding
application keeps its own.

Spans: one SERVER span per request (parent: the client's ``traceparent``), one CLIENT
span per upstream attempt under it (retries and fallbacks are siblings), whose context
goes upstream as ``traceparent``. Prompts and completions are recorded only with
``otel.capture_content: true``; keys and headers never.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from gatewayd.config.model import OtelSettings
from gatewayd.observability.log import get_logger
from gatewayd.providers.base import (
    AttemptLimits,
    EventStream,
    Provider,
    ProviderRequest,
    StreamSink,
    UpstreamFailure,
    UpstreamResponse,
)
from gatewayd.tracing.genai import (
    StreamFacts,
    operation_for,
    provider_name,
    request_attributes,
    response_attributes,
)
from gatewayd.tracing.request_trace import (
    NOOP_TRACE,
    HeaderGetter,
    RequestSummary,
    RequestTrace,
    Sender,
    Tracing,
    _plain_send,
)

log = get_logger(__name__)

_PROPAGATOR = TraceContextTextMapPropagator()
#: Seconds stopService waits for the last spans to leave.
SHUTDOWN_WAIT = 3.0
#: Seconds between two log lines of the same kind from the SDK.
LOG_EVERY = 60.0
#: Probes and scrapes, every few seconds: not worth a trace each.
UNTRACED = ("/health", "/metrics")


def _exporter(s: OtelSettings) -> SpanExporter:
    headers = dict(s.headers) or None
    protocol = s.protocol
    if protocol is None:
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        insecure = None if s.endpoint is None else s.endpoint.startswith("http://")
        return GrpcExporter(endpoint=s.endpoint, insecure=insecure, headers=headers)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = s.endpoint
    if endpoint is not None and "://" not in endpoint:
        endpoint = "http://" + endpoint  # host:port
    if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"  # like OTEL_EXPORTER_OTLP_ENDPOINT
    return OTLPSpanExporter(endpoint=endpoint, headers=headers)


class _ToTwistedLog(logging.Handler):
    """The SDK's warnings (a collector that is down) into gatewayd's log, not stderr;
    each kind at most once a minute ("Queue full" would otherwise come once per span)."""

    def __init__(self, level: int, reactor: Any) -> None:
        super().__init__(level)
        self.reactor = reactor
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = str(record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -LOG_EVERY) < LOG_EVERY:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        try:
            message = record.getMessage()
        except Exception:
            message = key
        more = f" (and {skipped} more like it)" if skipped else ""
        fmt = "opentelemetry: {message}{more}"
        if threading.current_thread() is threading.main_thread():
            log.warn(fmt, message=message, more=more)
        else:  # the exporter's thread: log observers belong to the reactor's
            self.reactor.callFromThread(log.warn, fmt, message=message, more=more)


class OtelTracing(Tracing):
    """Tracing through the OpenTelemetry SDK, exporting OTLP."""

    enabled = True

    def __init__(self, settings: OtelSettings, reactor: Any) -> None:
        self.settings = settings
        self.reactor = reactor
        resource = Resource.create(
            {SERVICE_NAME: settings.service_name} if settings.service_name else {}
        )
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: "gatewayd"}))
        sampler = None
        if settings.sample_ratio is not None:
            sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self.provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
        # Queue bound (2048 spans), batch size and delay: the SDK's defaults, tuned by the
        # standard OTEL_BSP_* variables. Beyond the bound spans are dropped.
        self.provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
        self.tracer = self.provider.get_tracer("gatewayd")
        otel_log = logging.getLogger("opentelemetry")
        if not any(isinstance(h, _ToTwistedLog) for h in otel_log.handlers):
            otel_log.addHandler(_ToTwistedLog(logging.WARNING, reactor))
            otel_log.propagate = False
        log.info(
            "tracing: OpenTelemetry to {endpoint} ({protocol})",
            endpoint=settings.endpoint or "the OTEL_EXPORTER_OTLP_* endpoint",
            protocol=settings.protocol or "OTEL_EXPORTER_OTLP_PROTOCOL or http/protobuf",
        )

    def start(
        self, method: str, path: str, header: HeaderGetter, request_id: str, client: str
    ) -> RequestTrace:
        if path.startswith(UNTRACED):
            return NOOP_TRACE
        carrier = {}
        for name in ("traceparent", "tracestate"):
            value = header(name)
            if value is not None:
                carrier[name] = value
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        span = self.tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": path,
                "client.address": client,
                "gatewayd.request_id": request_id,
            },
        )
        return _Trace(self, span, method, path, request_id)

    def shutdown(self) -> Deferred[None]:
        """Flush and stop in a thread of its own; give up after :data:`SHUTDOWN_WAIT`."""
        d: Deferred[None] = Deferred()

        def run() -> None:
            try:
                self.provider.shutdown()
            finally:
                self.reactor.callFromThread(lambda: None if d.called else d.callback(None))

        threading.Thread(target=run, name="gatewayd-otel-shutdown", daemon=True).start()
        timer = self.reactor.callLater(
            SHUTDOWN_WAIT, lambda: None if d.called else d.callback(None)
        )

        def done(result: None) -> None:
            if timer.active():
                timer.cancel()
            return result

        return d.addBoth(done)


class _Trace(RequestTrace):
    """One request: its server span, and a client span per attempt."""

    def __init__(
        self, tracing: OtelTracing, span: trace.Span, method: str, path: str, request_id: str
    ) -> None:
        self.tracing = tracing
        self.span = span
        self.method = method
        self.path = path
        self.request_id = request_id
        self.context = trace.set_span_in_context(span)

    def send(
        self,
        provider: Provider,
        request: ProviderRequest,
        limits: AttemptLimits,
        sender: Sender = _plain_send,
    ) -> Deferred[UpstreamResponse]:
        dep = provider.deployment
        op = operation_for(request.endpoint.value)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": provider_name(dep.provider.prefix),
            "gen_ai.request.model": dep.model,
            "gatewayd.deployment": dep.id,
            "gatewayd.alias": dep.model_name,
            "gatewayd.request_id": self.request_id,
        }
        if dep.api_base:
            parts = urlsplit(dep.api_base)
            if parts.hostname:
                attributes["server.address"] = parts.hostname
            attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
        attributes.update(request_attributes(request.body, self.tracing.settings.capture_content))
        span = self.tracing.tracer.start_span(
            f"{op} {dep.model}", context=self.context, kind=SpanKind.CLIENT, attributes=attributes
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        headers = tuple(h for h in request.headers if h[0] not in ("traceparent", "tracestate"))
        d = sender(provider, replace(request, headers=headers + tuple(carrier.items())), limits)
        attempt = _Attempt(self, span)
        d.addCallbacks(attempt.succeeded, attempt.failed)
        return d

    def finish(self, summary: RequestSummary) -> None:
        span = self.span
        if span.is_recording():
            attrs: dict[str, Any] = {"http.response.status_code": summary.status}
            if summary.alias is not None:
                span.update_name(f"{self.method} {self.path}")
                attrs["gen_ai.operation.name"] = operation_for(self.path)
                attrs["gen_ai.request.model"] = summary.alias
                attrs["gatewayd.attempts"] = summary.attempts
            if summary.deployment:
                attrs["gatewayd.deployment"] = summary.deployment
            if summary.fallback:
                attrs["gatewayd.fallback"] = summary.fallback
            if summary.outcome:
                attrs["gatewayd.outcome"] = summary.outcome
            span.set_attributes(attrs)
            if summary.status >= 500:
                span.set_attribute("error.type", str(summary.status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class _Attempt:
    """Ends an attempt's client span with what came back."""

    def __init__(self, trace_: _Trace, span: trace.Span) -> None:
        self.trace = trace_
        self.span = span
        self.started = _now()

    def succeeded(self, response: UpstreamResponse) -> UpstreamResponse:
        if response.stream is not None:
            response.stream = _TracedStream(response.stream, self)
            return response
        if self.span.is_recording():
            self.span.set_attribute("http.response.status_code", response.status)
            self.span.set_attributes(
                response_attributes(
                    response.body, response.usage, self.trace.tracing.settings.capture_content
                )
            )
        self.span.end()
        return response

    def failed(self, failure: Failure) -> Failure:
        err = failure.value
        if isinstance(err, UpstreamFailure):
            error_type = str(err.status) if err.kind.value == "http" else err.kind.value
            if err.kind.value == "http":
                self.span.set_attribute("http.response.status_code", err.status)
            self.span.set_status(Status(StatusCode.ERROR, err.message[:200]))
        elif isinstance(err, CancelledError):
            error_type = "cancelled"
        else:
            error_type = type(err).__name__
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.set_attribute("error.type", error_type)
        self.span.end()
        return failure

    def first_token(self) -> None:
        for span, since in ((self.span, self.started), (self.trace.span, None)):
            if span.is_recording():
                start = since if since is not None else getattr(span, "start_time", None)
                attrs = {}
                if start is not None:
                    attrs["gen_ai.server.time_to_first_token"] = (_now() - start) / 1e9
                span.add_event("gen_ai.first_token", attrs)


def _now() -> int:
    return time.time_ns()


class _TracedStream(EventStream):
    """A started stream whose events the attempt's span reads in passing (model,
    usage, finish reasons, the first token); flow control passes straight through."""

    def __init__(self, inner: EventStream, attempt: _Attempt) -> None:
        self.inner = inner
        self.attempt = attempt
        self.sink: StreamSink | None = None
        self.first = True
        self.ended = False
        self.facts = StreamFacts()

    def start(self, sink: StreamSink) -> None:
        self.sink = sink
        self.inner.start(self)

    def pause(self) -> None:
        self.inner.pause()

    def resume(self) -> None:
        self.inner.resume()

    def cancel(self) -> None:
        self.inner.cancel()
        self._end(None, cancelled=not self.facts.done)

    # -- StreamSink ------------------------------------------------------------

    def event(self, data: bytes) -> None:
        if self.first:
            self.first = False
            self.attempt.first_token()
        if self.attempt.span.is_recording():
            self.facts.read(data)
        assert self.sink is not None
        self.sink.event(data)

    def end(self, failure: UpstreamFailure | None) -> None:
        self._end(failure)
        assert self.sink is not None
        self.sink.end(failure)

    def _end(self, failure: UpstreamFailure | None, cancelled: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        span = self.attempt.span
        if span.is_recording():
            span.set_attributes(self.facts.attributes())
            if failure is not None:
                span.set_attribute("error.type", failure.kind.value)
                span.set_status(Status(StatusCode.ERROR, failure.message[:200]))
            elif cancelled:
                span.set_attribute("error.type", "cancelled")
        span.end()
