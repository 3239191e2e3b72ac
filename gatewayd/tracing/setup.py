"""Choosing the tracing in force at start and on reload: OpenTelemetry or the no-op."""

from __future__ import annotations

from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.model import OtelSettings
from gatewayd.observability.log import get_logger
from gatewayd.tracing.request_trace import NOOP_TRACING, Tracing, env_enabled, otel_installed

log = get_logger("gatewayd.tracing")


def build_tracing(settings: OtelSettings | None, reactor: Any) -> Tracing:
    """The tracing in force: OpenTelemetry when configured (the ``otel`` key, or an
    ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` in the environment), else the no-op."""
    if settings is None:
        if not env_enabled():
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
    from gatewayd.tracing.otel import OtelTracing

    try:
        return OtelTracing(settings, reactor)
    except ValueError as e:  # the SDK's own checks of OTEL_* values
        raise ConfigError("general_settings.otel", f"cannot start OpenTelemetry: {e}") from None
