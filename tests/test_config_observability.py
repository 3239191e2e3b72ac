"""general_settings.otel and general_settings.log_format: parsed, checked, named in errors;
and the tracing seam's choice between OpenTelemetry and the no-op."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from gatewayd.config import ConfigError, parse_config
from gatewayd.config.model import OtelSettings
from gatewayd.tracing.request_trace import NOOP_TRACING
from gatewayd.tracing.setup import build_tracing

MODELS = [{"model_name": "m", "params": {"model": "mock/x"}}]


def general(env: dict[str, str] | None = None, **settings: Any) -> Any:
    doc = {"model_list": MODELS, "general_settings": settings}
    return parse_config(json.dumps(doc), environ=env or {}).general


def test_defaults_are_off_and_text() -> None:
    g = general()
    assert g.otel is None and g.log_format == "text"


def test_otel_settings_are_read() -> None:
    g = general(
        {"TOKEN": "collector-secret"},
        otel={
            "endpoint": "http://collector:4318",
            "protocol": "grpc",
            "service_name": "edge",
            "sample_ratio": 0.25,
            "capture_content": True,
            "headers": {"authorization": "Bearer ${TOKEN}"},
        },
        log_format="json",
    )
    assert g.otel == OtelSettings(
        endpoint="http://collector:4318",
        protocol="grpc",
        service_name="edge",
        sample_ratio=0.25,
        capture_content=True,
        headers={"authorization": "Bearer collector-secret"},
    )
    assert "collector-secret" not in repr(g)
    assert g.log_format == "json"
    assert general(otel=True).otel == OtelSettings()
    assert general(otel={"enabled": False}).otel == OtelSettings(enabled=False)


@pytest.mark.parametrize(
    ("otel", "path", "reason"),
    [
        ({"protocol": "thrift"}, "general_settings.otel.protocol", "http/protobuf, grpc"),
        ({"endpoint": "ftp://collector"}, "general_settings.otel.endpoint", "http://"),
        ({"endpoint": "collector"}, "general_settings.otel.endpoint", "host:port"),
        ({"sample_ratio": 2}, "general_settings.otel.sample_ratio", "0 to 1"),
        ({"sample_ratio": -1}, "general_settings.otel.sample_ratio", ""),
        ({"capture_content": "maybe"}, "general_settings.otel.capture_content", ""),
        ({"headers": ["a"]}, "general_settings.otel.headers", "mapping"),
        ("yes", "general_settings.otel", "mapping"),
    ],
)
def test_bad_otel_settings_name_the_key(otel: Any, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        general(otel=otel)
    assert str(e.value).startswith(path) and reason in str(e.value)


def test_bad_log_format_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"general_settings\.log_format: unknown format 'xml'"):
        general(log_format="xml")


def test_unknown_otel_key_is_a_warning() -> None:
    doc = {"model_list": MODELS, "general_settings": {"otel": {"endpont": "http://x"}}}
    config = parse_config(json.dumps(doc), environ={})
    assert any("general_settings.otel.endpont" in w for w in config.warnings)


def test_tracing_is_off_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    assert build_tracing(None, Clock()) is NOOP_TRACING
    assert build_tracing(OtelSettings(enabled=False), Clock()) is NOOP_TRACING
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert build_tracing(None, Clock()) is NOOP_TRACING
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    tracing = build_tracing(None, Clock())  # the standard variable alone turns it on
    assert tracing.enabled
    tracing.provider.shutdown()  # type: ignore[attr-defined]


def test_bad_otel_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "5")
    with pytest.raises(ConfigError, match=r"^general_settings\.otel: cannot start"):
        build_tracing(OtelSettings(endpoint="http://127.0.0.1:9"), Clock())


def test_exporter_follows_the_protocol() -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from gatewayd.tracing.otel import _exporter

    grpc = _exporter(OtelSettings(endpoint="http://127.0.0.1:4317", protocol="grpc"))
    assert isinstance(grpc, GrpcExporter)
    grpc.shutdown()
    http = _exporter(OtelSettings(endpoint="http://collector:4318/"))
    assert isinstance(http, OTLPSpanExporter)
    assert http._endpoint == "http://collector:4318/v1/traces"
    bare = _exporter(OtelSettings(endpoint="collector:4318"))
    assert bare._endpoint == "http://collector:4318/v1/traces"  # type: ignore[attr-defined]
    full = _exporter(OtelSettings(endpoint="http://collector:4318/v1/traces"))
    assert full._endpoint == "http://collector:4318/v1/traces"  # type: ignore[attr-defined]


def test_litellm_json_logs_means_json() -> None:
    doc = {"model_list": MODELS, "litellm_settings": {"json_logs": True}}
    config = parse_config(json.dumps(doc), environ={})
    assert config.general.log_format == "json"
    assert not any("json_logs" in w for w in config.warnings)
    assert general(json_logs=True, log_format="text").log_format == "text"


def test_without_the_otel_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def missing(name: str, *args: Any) -> Any:
        return None if name.startswith("opentelemetry") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", missing)
    with pytest.raises(ConfigError, match=r"^general_settings\.otel: .*gatewayd\[otel\]"):
        general(otel={"endpoint": "http://collector:4318"})
    assert general(otel={"enabled": False}).otel == OtelSettings(enabled=False)
    # The environment alone cannot stop the gateway: tracing stays off, with a warning.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    assert build_tracing(None, Clock()) is NOOP_TRACING
