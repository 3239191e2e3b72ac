"""The tracing seam: a server span per request, a client span per upstream attempt.

When tracing is off (the default) every call here is a no-op on shared objects, so the
hot path costs a method call. When ``general_settings.otel`` (or the standard
``OTEL_EXPORTER_OTLP_*`` variables) turn it on, :func:`build_tracing` loads
:mod:`gatewayd.otel`, the OpenTelemetry SDK implementation (the ``otel`` extra).

Used by the web layer (:meth:`Tracing.start` when a request arrives,
:meth:`RequestTrace.finish` when it is logged) and by the router
(:meth:`RequestTrace.send` around each attempt); imports only the provider seam.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed

from gatewayd.config.errors import ConfigError
from gatewayd.config.model import OtelSettings
from gatewayd.log import get_logger
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


def _env_enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def build_tracing(settings: OtelSettings | None, reactor: Any) -> Tracing:
    """The tracing in force: OpenTelemetry when configured (the ``otel`` key, or an
    ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` in the environment), else the no-op."""
    if settings is None:
        if not _env_enabled():
            return NOOP_TRACING
        settings = OtelSettings()
    if not settings.enabled:
        return NOOP_TRACING
    if not otel_installed():
        # The config check refuses an explicit `otel:` without the extra; this is the
        # environment-only case, which must not stop the gateway.
        log.warn(
            "OTEL_EXPORTER_OTLP_* is set but OpenTelemetry is not installed "
            "(pip install 'gatewayd[otel]'): tracing stays off"
        )
        return NOOP_TRACING
    from gatewayd.otel import OtelTracing

    try:
        return OtelTracing(settings, reactor)
    except ValueError as e:  # the SDK's own checks of OTEL_* values
        raise ConfigError("general_settings.otel", f"cannot start OpenTelemetry: {e}") from None
