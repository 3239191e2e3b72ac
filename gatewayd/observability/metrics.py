"""Every metric gatewayd exports (:class:`GatewayMetrics`).

A leaf module: the router and the web layer record into one :class:`GatewayMetrics`
owned by the service; ``GET /metrics`` renders it. Each instance has its own
:class:`~prometheus_client.CollectorRegistry` (never the global default), so several
gateways embedded in one process, or in one test run, do not clash.

One process: the values are kept and rendered by :mod:`gatewayd.observability.metric_store` (exactly
prometheus_client's output, much faster). Several worker processes: set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by all of them. Then every
process writes its values into its own files there (:mod:`gatewayd.observability.metric_share`) and any
one of them renders the sum (:mod:`gatewayd.observability.metric_merge`), in the same format. Gauges
read from callbacks are pushed into the shared files by :meth:`GatewayMetrics.refresh`,
which the service calls periodically in that mode. See docs/observability.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client.exposition import choose_encoder

from gatewayd.config.errors import ConfigError
from gatewayd.observability.metric_kinds import (
    LAG_BUCKETS,
    LATENCY_BUCKETS,
    Counter,
    Gauge,
    GaugeMode,
    Histogram,
    OrderedRegistry,
    ValueGauge,
    multiprocess_dir,
)
from gatewayd.observability.metric_merge import Merger
from gatewayd.observability.metric_share import SharedStore, process_store
from gatewayd.observability.metric_store import Labels, Sample, render_openmetrics, render_text

__all__ = [
    "LAG_BUCKETS",
    "LATENCY_BUCKETS",
    "Counter",
    "GatewayMetrics",
    "Gauge",
    "GaugeMode",
    "Histogram",
    "Labels",
    "Sample",
    "ValueGauge",
    "multiprocess_dir",
]


class GatewayMetrics:
    """Every metric gatewayd exports. Label names: ``alias``, ``deployment``, ``status``, ``dialect``."""

    def __init__(self, native: bool | None = None, store: SharedStore | None = None) -> None:
        """One process: the values in :mod:`gatewayd.observability.metric_store`, or with ``native``
        False in ``prometheus_client``'s metrics. With ``PROMETHEUS_MULTIPROC_DIR`` set
        (or a ``store`` given: tests play several processes with them), in this
        process's shared files, and rendered summed over every process's."""
        directory = multiprocess_dir()
        if store is None and directory is not None:
            if not os.path.isdir(directory):
                raise ConfigError(
                    "PROMETHEUS_MULTIPROC_DIR",
                    f"{directory!r} is not a directory: multiprocess metrics need an existing one",
                )
            store = process_store(directory)
        #: With workers: what reads every process's files at a scrape.
        self.shared = sh = Merger(store) if store is not None else None
        self.native = store is None and native is not False
        self.registry = OrderedRegistry(auto_describe=False)
        r = self.registry
        n = self.native
        self.requests = Counter(
            "gatewayd_requests_total",
            "Requests answered, by alias, the deployment that answered, HTTP status and "
            "the client's dialect (chat, responses, messages).",
            ("alias", "deployment", "status", "dialect"),
            r,
            native=n,
            shared=sh,
        )
        self.endpoint_requests = Counter(
            "gatewayd_endpoint_requests_total",
            "Requests answered, by alias, API endpoint (chat, completions, embeddings, "
            "responses, messages, speech, transcriptions, translations, images, "
            "moderations, rerank) and HTTP status.",
            ("alias", "endpoint", "status"),
            r,
            native=n,
            shared=sh,
        )
        self.attempts = Counter(
            "gatewayd_upstream_attempts_total",
            "Upstream attempts by alias, deployment and outcome (ok, or the failure kind).",
            ("alias", "deployment", "outcome"),
            r,
            native=n,
            shared=sh,
        )
        self.retries = Counter(
            "gatewayd_retries_total",
            "Attempts made again on the same alias.",
            ("alias",),
            r,
            native=n,
            shared=sh,
        )
        self.fallbacks = Counter(
            "gatewayd_fallbacks_total",
            "Requests answered by a fallback alias.",
            ("alias", "fallback"),
            r,
            native=n,
            shared=sh,
        )
        self.hedges_sent = Counter(
            "gatewayd_hedges_sent_total",
            "Hedged copies sent: a request had no first byte after the alias's hedge delay.",
            ("alias",),
            r,
            native=n,
            shared=sh,
        )
        self.hedges_won = Counter(
            "gatewayd_hedges_won_total",
            "Hedged copies that produced a first byte before the original attempt.",
            ("alias",),
            r,
            native=n,
            shared=sh,
        )
        self.hedges_cancelled = Counter(
            "gatewayd_hedges_cancelled_total",
            "Attempts (original or hedge) cancelled because another copy answered first.",
            ("alias",),
            r,
            native=n,
            shared=sh,
        )
        self.stream_failures = Counter(
            "gatewayd_stream_failures_total",
            "Streams that broke off after their first byte (ended with an in-band error).",
            ("alias", "deployment"),
            r,
            native=n,
            shared=sh,
        )
        self.tokens = Counter(
            "gatewayd_tokens_total",
            "Tokens reported by upstreams' usage objects, by kind (prompt, completion).",
            ("alias", "deployment", "kind"),
            r,
            native=n,
            shared=sh,
        )
        self.key_requests = Counter(
            "gatewayd_key_requests_total",
            "Requests by client key name (never the key), alias and HTTP status.",
            ("key", "alias", "status"),
            r,
            native=n,
            shared=sh,
        )
        self.key_tokens = Counter(
            "gatewayd_key_tokens_total",
            "Tokens by client key name, alias and kind (prompt, completion); a stream that "
            "reported no usage counts its reservation.",
            ("key", "alias", "kind"),
            r,
            native=n,
            shared=sh,
        )
        self.spend = Counter(
            "gatewayd_spend_usd_total",
            "Spend in USD at the deployments' input/output_cost_per_token, by key name, alias "
            "and deployment.",
            ("key", "alias", "deployment"),
            r,
            native=n,
            shared=sh,
        )
        self.state_store_outages = Counter(
            "gatewayd_state_store_outages_total",
            "Times the shared state store became unreachable.",
            (),
            r,
            native=n,
            shared=sh,
        )
        self.request_log_dropped = Counter(
            "gatewayd_request_log_dropped_total",
            "Request-log rows dropped, never waited for: queue_full (the writer was "
            "behind) or write_error (the disk failed).",
            ("reason",),
            r,
            native=n,
            shared=sh,
        )
        self.state_store_up = Gauge(
            "gatewayd_state_store_up",
            "1 while the shared state store answers (or none is set).",
            (),
            r,
            mode="livemax",
            shared=sh,
        )
        self.upstream_latency = Histogram(
            "gatewayd_upstream_latency_seconds",
            "Time an upstream took to answer (a whole JSON body, or a stream's first byte).",
            ("alias", "deployment"),
            r,
            native=n,
            shared=sh,
        )
        self.ttft = Histogram(
            "gatewayd_time_to_first_token_seconds",
            "Streams: time from the request to the first event written to the client.",
            ("alias", "deployment"),
            r,
            native=n,
            shared=sh,
        )
        self.overhead = Histogram(
            "gatewayd_overhead_seconds",
            "Time spent in the gateway itself: total latency minus upstream time "
            "(JSON answers on the first attempt).",
            (),
            r,
            native=n,
            shared=sh,
        )
        self.reactor_lag = Histogram(
            "gatewayd_reactor_lag_seconds",
            "How late a periodic call fired: the event loop was blocked this long.",
            (),
            r,
            LAG_BUCKETS,
            native=n,
            shared=sh,
        )
        self.reloads = Counter(
            "gatewayd_config_reloads_total",
            "Config reloads by result (ok, error).",
            ("result",),
            r,
            native=n,
            shared=sh,
        )
        for result in ("ok", "error"):  # both series exist from the start: increase() works
            self.reloads.touch(result)
        self.last_reload = ValueGauge(
            "gatewayd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (the start counts).",
            r,
            "max",
            native=n,
            shared=sh,
        )
        self.cache_requests = Counter(
            "gatewayd_cache_requests_total",
            "Requests the response cache saw, by alias, endpoint and result (hit, miss, "
            "bypass, coalesced: answered by an identical request's upstream call).",
            ("alias", "endpoint", "result"),
            r,
            native=n,
            shared=sh,
        )
        self.cache_evictions = Counter(
            "gatewayd_cache_evictions_total",
            "Cached answers pushed out of the in-memory cache to keep it under max_bytes.",
            (),
            r,
            native=n,
            shared=sh,
        )
        self.cache_bytes = self._gauge(
            "gatewayd_cache_bytes", "Bytes held by the in-memory response cache.", ()
        )
        self.streams_in_flight = self._gauge(
            "gatewayd_streams_in_flight", "Streams being relayed right now.", ()
        )
        self.in_flight = self._gauge(
            "gatewayd_deployment_in_flight",
            "Upstream requests in flight per deployment.",
            ("alias", "deployment"),
        )
        self.cooldown = self._gauge(
            "gatewayd_deployment_cooldown",
            "1 while a deployment is in cooldown, else 0.",
            ("alias", "deployment"),
            "livemax",
        )
        self.latency = self._gauge(
            "gatewayd_deployment_latency_seconds",
            "A deployment's peak-EWMA latency, as latency-based-routing scores it: time to "
            "first byte (kind=ttfb, streams) or seconds per output token (kind=per_token, JSON).",
            ("alias", "deployment", "kind"),
            "livemax",
        )
        self.client_connections = self._gauge(
            "gatewayd_client_connections", "Client connections open right now.", ()
        )
        self.upstream_connections = self._gauge(
            "gatewayd_upstream_connections",
            "Pooled upstream connections per origin, by state (in_use, idle).",
            ("origin", "state"),
        )
        self.open_streams = 0
        self.streams_in_flight.collect = lambda: [((), float(self.open_streams))]

    def _gauge(
        self, name: str, help: str, labelnames: Sequence[str], mode: GaugeMode = "livesum"
    ) -> Gauge:
        return Gauge(name, help, labelnames, self.registry, mode, shared=self.shared)

    def gauges(self) -> list[Gauge]:
        return [
            self.streams_in_flight,
            self.in_flight,
            self.cooldown,
            self.latency,
            self.client_connections,
            self.upstream_connections,
            self.state_store_up,
            self.cache_bytes,
        ]

    def count_usage(self, alias: str, deployment: str, prompt: int, completion: int) -> None:
        """Add a finished request's token counts (every input token, cached ones too:
        the caller reads them from any dialect's usage with ``Spent.from_usage``)."""
        for kind, n in (("prompt", prompt), ("completion", completion)):
            if n > 0:
                self.tokens.inc(alias, deployment, kind, amount=n)

    def refresh(self) -> None:
        """Shared mode: push the callback gauges' values into this process's files (and
        make the series other processes added, ahead of the next scrape)."""
        if self.shared is not None:
            for g in self.gauges():
                g.refresh()
            self.shared.catch_up()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and content type for ``GET /metrics``: OpenMetrics when ``accept``
        asks for it, else the Prometheus text format."""
        pieces, content_type = self.pieces(accept)
        return b"".join(pieces), content_type

    def pieces(self, accept: str | None = None) -> tuple[list[bytes], str]:
        """:meth:`exposition`'s body in pieces, to be written in turn (with 1,000
        deployments it is 3 MB: joining it costs more than rendering it). With workers,
        the sum over every process's files, read now (this process's gauges first)."""
        if self.shared is not None:
            self.refresh()
            self.shared.update()
        encoder, content_type = choose_encoder(accept or "")
        if not self.native and self.shared is None:  # prometheus_client's own metrics
            return [encoder(self.registry)], content_type
        if content_type.startswith("application/openmetrics-text"):
            return render_openmetrics(self.registry.families()), content_type
        return render_text(self.registry.families()), content_type

    def render(self) -> bytes:
        """The Prometheus text format."""
        return self.exposition()[0]
