"""``general_settings.otel`` and ``general_settings.log_format``."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.model import LOG_FORMATS, OTEL_PROTOCOLS, OtelSettings
from gatewayd.config.values import ValueReader, kind

OTEL_KEYS = {
    "enabled",
    "endpoint",
    "protocol",
    "service_name",
    "sample_ratio",
    "capture_content",
    "headers",
}


def otel_settings(reader: ValueReader, raw: Any, path: str) -> OtelSettings | None:
    """The ``otel`` mapping, checked; None when absent. Refuses an enabled ``otel``
    without the OpenTelemetry SDK installed (the ``otel`` extra)."""
    if raw is None:
        return None
    if isinstance(raw, bool):  # `otel: true` turns it on with the OTEL_* defaults
        raw = {"enabled": raw}
    d = reader._mapping(raw, path)
    reader._unknown(d, OTEL_KEYS, path)
    protocol = reader._str(d, "protocol", path)
    if protocol is not None and protocol not in OTEL_PROTOCOLS:
        raise ConfigError(
            f"{path}.protocol",
            f"unknown protocol {protocol!r}; expected one of {', '.join(OTEL_PROTOCOLS)}",
        )
    endpoint = reader._str(d, "endpoint", path)
    if endpoint is not None and not re.match(r"^(https?://[^/\s]+(/\S*)?|[\w.-]+:\d+)$", endpoint):
        raise ConfigError(
            f"{path}.endpoint",
            f"expected a URL like http://collector:4318 (or host:port), got {endpoint!r}",
        )
    ratio = None
    if d.get("sample_ratio") is not None:
        ratio = reader._float(d, "sample_ratio", path, 1.0)
        if ratio > 1:
            raise ConfigError(f"{path}.sample_ratio", f"expected 0 to 1, got {ratio:g}")
    settings = OtelSettings(
        enabled=reader._bool(d, "enabled", path, True),
        endpoint=endpoint,
        protocol=protocol,
        service_name=reader._str(d, "service_name", path),
        sample_ratio=ratio,
        capture_content=reader._bool(d, "capture_content", path),
        headers=_headers(d.get("headers"), f"{path}.headers"),
    )
    if settings.enabled and not _otel_installed():
        raise ConfigError(
            path, "tracing needs OpenTelemetry: pip install 'gatewayd[otel]' (or remove the key)"
        )
    return settings


def _otel_installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.sdk") is not None
    except (ImportError, ValueError):
        return False


def _headers(v: Any, path: str) -> Mapping[str, str]:
    if v is None:
        return MappingProxyType({})
    if not isinstance(v, dict) or not all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()
    ):
        raise ConfigError(path, f"expected a mapping of header names to strings, got {kind(v)}")
    return MappingProxyType(dict(v))


def log_format(reader: ValueReader, g: Mapping[str, Any], section: str) -> str:
    """``log_format``, or LiteLLM's ``json_logs: true`` when it is absent."""
    value = reader._str(g, "log_format", section)
    if value is None:
        value = "json" if reader._bool(g, "json_logs", section) else "text"
    if value not in LOG_FORMATS:
        raise ConfigError(
            f"{section}.log_format", f"unknown format {value!r}; expected one of text, json"
        )
    return value
