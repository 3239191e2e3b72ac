"""Immutable, typed configuration objects. Built by :mod:`gatewayd.config.loader`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gatewayd.providers.catalog import ProviderInfo


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


ROUTING_STRATEGIES = ("simple-shuffle", "least-busy")


@dataclass(frozen=True)
class Deployment:
    """One ``model_list`` entry: an alias served by one upstream model."""

    #: The alias clients send as ``model``.
    model_name: str
    #: A stable id, safe to show (headers, metrics, /health): never a key or a URL.
    id: str
    provider: ProviderInfo
    #: The upstream model name (``params.model`` after the first ``/``).
    model: str
    #: Base URL with no trailing slash; None only for the in-process ``mock`` provider.
    api_base: str | None
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None
    #: Seconds for one upstream attempt; None means the general ``request_timeout``.
    timeout: float | None = None
    #: Seconds to the first byte of a stream; None means ``timeout``.
    stream_timeout: float | None = None
    weight: float | None = None
    rpm: int | None = None
    max_parallel_requests: int | None = None
    #: Extra upstream headers (may hold secrets: never logged).
    headers: Mapping[str, str] = field(default_factory=_empty, repr=False)
    #: Provider-specific params (``mock_response`` ...), unknown to the core.
    extra: Mapping[str, Any] = field(default_factory=_empty, repr=False)
    #: Position in ``model_list``, for messages.
    index: int = 0


@dataclass(frozen=True)
class GeneralSettings:
    """``general_settings`` (and LiteLLM's ``router_settings``/``litellm_settings``)."""

    master_key: str | None = field(default=None, repr=False)
    num_retries: int = 0
    fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    context_window_fallbacks: Mapping[str, tuple[str, ...]] = field(default_factory=_empty)
    default_fallbacks: tuple[str, ...] = ()
    routing_strategy: str = "simple-shuffle"
    allowed_fails: int = 3
    cooldown_time: float = 30.0
    request_timeout: float = 600.0
    max_request_body_size: int = 64 * 1024 * 1024
    #: Longest gap between two stream chunks once a stream has started.
    stream_idle_timeout: float = 60.0
    #: Send an SSE comment this often while waiting for a stream's first byte; 0 = never.
    stream_heartbeat_interval: float = 0.0
    #: Longest wait for a ``Retry-After`` before moving on to the fallbacks instead.
    max_retry_after: float = 8.0
    #: Seconds SIGTERM waits for requests in flight.
    graceful_shutdown_timeout: float = 30.0
    #: ``/metrics`` asks for the master key too (it is open by default).
    require_auth_for_metrics_endpoint: bool = False
    #: Browser origins allowed by CORS (``*`` for any); none by default.
    cors_allow_origins: tuple[str, ...] = ()
    #: Drop request fields the chosen upstream's dialect cannot express (else a 400).
    drop_params: bool = False
    #: Seconds a Responses answer is kept for ``previous_response_id`` and GET.
    response_store_ttl: float = 3600.0
    #: Upper bound of the in-memory Responses store (oldest entries go first).
    response_store_max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class GatewayConfig:
    """The whole validated configuration: what one reload swaps."""

    deployments: tuple[Deployment, ...]
    general: GeneralSettings
    source: str = "<string>"
    #: Non-fatal findings (unknown keys ...), for the service to log.
    warnings: tuple[str, ...] = ()

    @property
    def aliases(self) -> Mapping[str, tuple[Deployment, ...]]:
        """Alias → its deployments, in file order."""
        out: dict[str, list[Deployment]] = {}
        for d in self.deployments:
            out.setdefault(d.model_name, []).append(d)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})
