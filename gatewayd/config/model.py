"""Immutable, typed configuration objects. Built by :mod:`gatewayd.config.loader`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gatewayd.config.aliases import DEFAULT_ALIAS_SETTINGS, AliasSettings
from gatewayd.config.cache import CacheSettings
from gatewayd.config.catalog import ProviderInfo
from gatewayd.config.fleet import HealthCheck, HedgeSettings
from gatewayd.config.keys import KeyTable
from gatewayd.config.request_log import RequestLogSettings


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


ROUTING_STRATEGIES = ("simple-shuffle", "least-busy", "latency-based-routing", "prefix-affinity")


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
    #: Tokens per minute (prompt + completion): a limit, like ``rpm``.
    tpm: int | None = None
    #: USD per token (LiteLLM's ``input_cost_per_token`` / ``output_cost_per_token``).
    input_cost_per_token: float = 0.0
    output_cost_per_token: float = 0.0
    #: USD per input token read from / written to the provider's prompt cache
    #: (LiteLLM's names); None: the input price.
    cache_read_input_token_cost: float | None = None
    cache_creation_input_token_cost: float | None = None
    #: Extra upstream headers (may hold secrets: never logged).
    headers: Mapping[str, str] = field(default_factory=_empty, repr=False)
    #: Provider-specific params (``mock_response`` ...), unknown to the core.
    extra: Mapping[str, Any] = field(default_factory=_empty, repr=False)
    #: Position in ``model_list``, for messages.
    index: int = 0
    #: TLS to the upstream: verify against the system store (True), not at all (False),
    #: or against a CA bundle (its path); a client certificate for mutual TLS.
    ssl_verify: bool | str = True
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: ``params.health_check``: probed on its own schedule; None: the general one, if any.
    health_check: HealthCheck | None = None
    #: ``params.discover``: list the upstream's models (a wildcard alias serves only those).
    discover: bool = False
    #: ``params.discover_interval``: seconds between listings; None: the general one.
    discover_interval: float | None = None
    #: The endpoints it serves (``params.api_endpoints`` / ``model_info.mode`` / its
    #: provider's defaults: :mod:`gatewayd.config.endpoints`); None: the text endpoints.
    api_endpoints: frozenset[str] | None = None
    #: USD per request, second of audio, character, image (:data:`~gatewayd.config.
    #: endpoints.UNIT_PRICES`): only those set.
    unit_prices: Mapping[str, float] = field(default_factory=_empty)


OTEL_PROTOCOLS = ("http/protobuf", "grpc")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class OtelSettings:
    """``general_settings.otel``: OpenTelemetry traces (docs/observability.md).
    A field left unset falls back to the standard ``OTEL_*`` environment variable."""

    enabled: bool = True
    #: The collector's base URL (``http://host:4318``; ``/v1/traces`` is added for HTTP).
    endpoint: str | None = None
    #: ``http/protobuf`` or ``grpc``.
    protocol: str | None = None
    service_name: str | None = None
    #: Fraction of new traces sampled (a client's sampled ``traceparent`` is followed).
    sample_ratio: float | None = None
    #: Record prompts and completions on spans (off: they may be personal data).
    capture_content: bool = False
    #: Headers for the collector (an auth token): never logged.
    headers: Mapping[str, str] = field(default_factory=_empty, repr=False)


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
    #: Worker processes behind one socket (``--workers`` wins); read at start only.
    workers: int = 1
    #: OpenTelemetry tracing; None: only if the OTEL_EXPORTER_OTLP_* variables say so.
    otel: OtelSettings | None = None
    #: ``text`` or ``json`` (one object per line); ``--log-format`` wins.
    log_format: str = "text"
    #: One access-log line per request (``false``: none; metrics are counted anyway).
    access_log: bool = True
    #: The share of successful requests that get an access-log line (errors always do).
    access_log_sample_rate: float = 1.0
    #: The listen(2) backlog: connections the kernel queues before gatewayd accepts them.
    listen_backlog: int = 1024
    #: ``redis://[:password@]host:port/db`` shared by every instance; None = in memory.
    state_store: str | None = field(default=None, repr=False)
    #: ``open``: serve on local state while the store is down; ``closed``: answer 503.
    state_store_failure: str = "open"
    #: One JSON line per finished request (billing, audits); None = not written.
    usage_log: str | None = None
    usage_log_max_bytes: int = 100 * 1024 * 1024
    usage_log_backups: int = 5
    #: Drop request fields the chosen upstream's dialect cannot express (else a 400).
    drop_params: bool = False
    #: Seconds a Responses answer is kept for ``previous_response_id`` and GET.
    response_store_ttl: float = 3600.0
    #: Upper bound of the in-memory Responses store (oldest entries go first).
    response_store_max_bytes: int = 64 * 1024 * 1024
    #: Largest multipart upload (audio, images): 413 past it, declared or received.
    max_audio_upload_bytes: int = 25 * 1024 * 1024
    #: The HMAC key of the file and batch ids handed out (docs/endpoints.md says where
    #: one comes from when unset).
    object_id_secret: str | None = field(default=None, repr=False)
    #: Per-alias overrides (``general_settings.alias_settings``).
    alias_settings: Mapping[str, AliasSettings] = field(default_factory=_empty)
    #: The console's request log (``general_settings.request_log``).
    request_log: RequestLogSettings = field(default_factory=RequestLogSettings)
    #: The operator console at ``/ui`` (default: on when a master key is set).
    ui: bool = False
    #: The response cache and request coalescing (``general_settings.cache``); None: off.
    cache: CacheSettings | None = None

    #: Hedged requests for every alias (``general_settings.hedge``); None: off.
    hedge: HedgeSettings | None = None
    #: The aliases with a ``hedge`` of their own in ``alias_settings`` (None: off).
    alias_hedges: Mapping[str, HedgeSettings | None] = field(default_factory=_empty)

    #: Seconds between active health checks of every deployment; 0: none (except the
    #: deployments with a ``health_check`` of their own).
    health_check_interval: float = 0.0
    #: Seconds between two listings of a discovering deployment's models.
    discover_interval: float = 60.0

    def for_alias(self, alias: str) -> AliasSettings:
        """``alias``'s own settings, or the defaults when it has none."""
        return self.alias_settings.get(alias, DEFAULT_ALIAS_SETTINGS)

    def hedge_for(self, alias: str) -> HedgeSettings | None:
        """How ``alias``'s requests are hedged: its own setting, else the general one."""
        if alias in self.alias_hedges:
            return self.alias_hedges[alias]
        return self.hedge


@dataclass(frozen=True)
class GatewayConfig:
    """The whole validated configuration: what one reload swaps."""

    deployments: tuple[Deployment, ...]
    general: GeneralSettings
    source: str = "<string>"
    #: Non-fatal findings (unknown keys ...), for the service to log.
    warnings: tuple[str, ...] = ()
    #: Client keys (top-level ``keys:``); empty = the master key only.
    keys: KeyTable = field(default_factory=KeyTable)

    @property
    def aliases(self) -> Mapping[str, tuple[Deployment, ...]]:
        """Alias → its deployments, in file order."""
        out: dict[str, list[Deployment]] = {}
        for d in self.deployments:
            out.setdefault(d.model_name, []).append(d)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})
