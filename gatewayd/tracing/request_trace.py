"""The tracing seam: a server span per request, a client span per upstream attempt.

When tracing is off (the default) every call here is a no-op on shared objects, so the
hot path costs a method call. When ``general_settings.otel`` (or the standard
``OTEL_EXPORTER_OTLP_*`` variables) turn it on, :func:`gatewayd.tracing.setup.build_tracing` loads
:mod:`gatewayd.tracing.otel`, the OpenTelemetry SDK implementation (the ``otel`` extra).

Used by the web layer (:meth:`Tracing.start` when a request arrives,
:meth:`RequestTrace.finish` when it is logged) and by the router
(:meth:`RequestTrace.send` around each attempt); imports only the provider seam.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed

from gatewayd.observability.log import get_logger
from gatewayd.providers.base import AttemptLimits, Provider, ProviderRequest, UpstreamResponse

#: How an attempt is sent: ``Provider.send``, or the dialect-aware
#: :func:`gatewayd.providers.dialect.send_in_dialect`.
Sender = Callable[[Provider, ProviderRequest, AttemptLimits], "Deferred[UpstreamResponse]"]


def _plain_send(
    provider: Provider, request: ProviderRequest, limits: AttemptLimits
) -> Deferred[UpstreamResponse]:
    return provider.send(request, limits)


log = get_logger(__name__)

#: Reads one request header (lower-case name) or None.
HeaderGetter = Callable[[str], "str | None"]


@dataclass
class RequestSummary:
    """What the server span records when the request is over (the access-log fields)."""

    status: int
    alias: str | None = None
    deployment: str | None = None
    attempts: int = 0
    fallback: str | None = None
    outcome: str | None = None


class RequestTrace:
    """One request's trace. This base class is the no-op used when tracing is off."""

    def send(
        self,
        provider: Provider,
        request: ProviderRequest,
        limits: AttemptLimits,
        sender: Sender = _plain_send,
    ) -> Deferred[UpstreamResponse]:
        """One upstream attempt, in a client span when tracing: ``sender``'s Deferred
        (same result, same cancellation)."""
        return sender(provider, request, limits)

    def finish(self, summary: RequestSummary) -> None:
        """The request is answered (or the client left): end the server span."""


class Tracing:
    """Starts request traces. This base class is the no-op used when tracing is off."""

    enabled = False

    def start(
        self, method: str, path: str, header: HeaderGetter, request_id: str, client: str
    ) -> RequestTrace:
        return NOOP_TRACE

    def shutdown(self) -> Deferred[None]:
        """Flush what is queued, briefly; fires when done (or given up)."""
        return succeed(None)


NOOP_TRACE = RequestTrace()
NOOP_TRACING = Tracing()


def trace_of(request: ProviderRequest) -> RequestTrace:
    """The request's trace, or the no-op one."""
    trace = request.trace
    return trace if isinstance(trace, RequestTrace) else NOOP_TRACE


def otel_installed() -> bool:
    """Whether the ``otel`` extra (the OpenTelemetry SDK) is importable."""
    try:
        return importlib.util.find_spec("opentelemetry.sdk") is not None
    except (ImportError, ValueError):
        return False


def env_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
