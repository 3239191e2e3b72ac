"""Every metric gatewayd exports, kept by :mod:`prometheus_client`.

A leaf module: the router and the web layer record into one :class:`GatewayMetrics`
owned by the service; ``GET /metrics`` renders it. Each instance has its own
:class:`~prometheus_client.CollectorRegistry` (never the global default), so several
gateways embedded in one process, or in one test run, do not clash.

Several worker processes: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by
all of them *before* they start (``prometheus_client`` picks its storage at import). Then
every process writes its samples into that directory and any one of them renders the sum
(:class:`~prometheus_client.multiprocess.MultiProcessCollector`). Gauges read from
callbacks are pushed into the shared files by :meth:`GatewayMetrics.refresh`, which the
service calls periodically in that mode. See docs/observability.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, values
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gatewayd.config.errors import ConfigError
from gatewayd.metricstore import (
    CounterFamily,
    CounterSeries,
    Family,
    GaugeFamily,
    HistogramFamily,
    HistogramSeries,
    Labels,
    Sample,
    render_openmetrics,
    render_text,
)

__all__ = ["GatewayMetrics", "Labels", "Sample", "multiprocess_dir"]

#: Seconds: from sub-millisecond overhead to multi-minute generations.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)
#: Seconds a periodic call fires late: a healthy reactor stays in the first buckets.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

GaugeMode = Literal["livesum", "livemax", "max"]


def multiprocess_dir() -> str | None:
    """The shared directory when ``prometheus_client`` runs in multiprocess mode, else None.

    The variable alone is not enough: it must have been set before ``prometheus_client``
    was imported, or this process writes nothing there."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    if path and values.ValueClass is not values.MutexValue:
        return path
    return None


class Counter:
    """``inc(*label_values, amount=1)``: a :class:`CounterFamily` in one process, a
    :class:`prometheus_client.Counter` (its values in the shared files) in multiprocess mode."""

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        native: bool = True,
    ) -> None:
        self.name = name
        self.labelnames = tuple(labelnames)
        # Label sets are never removed: each is looked up once, then found in this dict.
        self._children: dict[Labels, Any]  # CounterSeries, or prometheus_client's children
        if native:
            self.family: CounterFamily | None = CounterFamily(name, help, self.labelnames)
            self.family.register(registry)
            self._children = self.family.series
            self._new: Callable[[Labels], CounterSeries | _Counter] = self.family.child
        else:
            self.family = None
            metric = _Counter(name, help, self.labelnames, registry=registry)
            self._children = {} if self.labelnames else {(): metric}
            self._new = lambda labels: self._cache(labels, metric.labels(*labels))

    def _cache(self, labels: Labels, child: _Counter) -> _Counter:
        self._children[labels] = child
        return child

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._new(labels)
        child.inc(amount)

    def touch(self, *labels: str) -> None:
        """Create the series at 0 (so that ``increase()`` sees its first increment)."""
        if labels not in self._children:
            self._new(labels)


class Histogram:
    """``observe(value, *label_values)``: a :class:`HistogramFamily` in one process, a
    :class:`prometheus_client.Histogram` in multiprocess mode."""

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        native: bool = True,
    ) -> None:
        self.name = name
        self.labelnames = tuple(labelnames)
        self._children: dict[Labels, Any]  # HistogramSeries, or prometheus_client's children
        if native:
            self.family: HistogramFamily | None = HistogramFamily(
                name, help, self.labelnames, buckets
            )
            self.family.register(registry)
            self._children = self.family.series
            self._new: Callable[[Labels], HistogramSeries | _Histogram] = self.family.child
        else:
            self.family = None
            metric = _Histogram(name, help, self.labelnames, registry=registry, buckets=buckets)
            self._children = {} if self.labelnames else {(): metric}
            self._new = lambda labels: self._cache(labels, metric.labels(*labels))

    def _cache(self, labels: Labels, child: _Histogram) -> _Histogram:
        self._children[labels] = child
        return child

    def observe(self, value: float, *labels: str) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._new(labels)
        child.observe(value)


class ValueGauge:
    """A gauge without labels set by its owner (``set(value)``)."""

    def __init__(
        self,
        name: str,
        help: str,
        registry: CollectorRegistry,
        mode: GaugeMode = "max",
        native: bool = True,
    ) -> None:
        self.name = name
        self.value = 0.0
        self.family: GaugeFamily | None = None
        self._shared: _Gauge | None = None
        if native:
            self.family = GaugeFamily(name, help, (), lambda: [((), self.value)])
            self.family.register(registry)
        else:
            self._shared = _Gauge(name, help, registry=registry, multiprocess_mode=mode)

    def set(self, value: float) -> None:
        self.value = float(value)
        if self._shared is not None:
            self._shared.set(value)


class Gauge:
    """A gauge read at scrape time from ``collect`` (in-flight counts, cooldown states).

    ``collect`` is an attribute the gauge's owner sets; it returns ``(label_values,
    value)`` pairs. In one process it is called on every scrape; in multiprocess mode
    :meth:`refresh` copies its values into a shared :class:`prometheus_client.Gauge`
    (``mode`` says how the processes' values combine)."""

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        mode: GaugeMode = "livesum",
    ) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.collect: Callable[[], Iterable[Sample]] = lambda: ()
        self._shared: _Gauge | None = None
        self._written: dict[Labels, float] = {}  # multiprocess: the values in the files
        self._children: dict[Labels, _Gauge] = {}
        self.family: GaugeFamily | None = None
        if multiprocess_dir() is not None:
            self._shared = _Gauge(
                name, help, self.labelnames, registry=None, multiprocess_mode=mode
            )
        else:  # read through a lambda: the owner replaces ``collect``
            self.family = GaugeFamily(name, help, self.labelnames, lambda: self.collect())
            self.family.register(registry)

    def refresh(self) -> None:
        """Multiprocess mode: write the callback's current values to the shared files.
        Label sets that went away (a reload) are set to 0: the files cannot drop them.
        Only changed values are written (this runs twice a second, 2,000 label sets with
        1,000 deployments: each write is a prometheus_client lookup under a lock)."""
        if self._shared is None:
            return
        shared = self._shared
        now = {tuple(labels): value for labels, value in self.collect()}
        written, children = self._written, self._children
        for labels, value in now.items():
            if written.get(labels) != value:
                child = children.get(labels)
                if child is None:
                    child = children[labels] = shared.labels(*labels) if labels else shared
                child.set(value)
        for gone in written.keys() - now.keys():
            child = children.get(gone)
            (child if child is not None else shared.labels(*gone)).set(0)
        self._written = now


class _Registry(CollectorRegistry):
    """A registry that remembers the order of its collectors (the order they render in)."""

    def __init__(self, auto_describe: bool = False) -> None:
        super().__init__(auto_describe=auto_describe)
        self._ordered: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self._ordered.append(collector)

    def families(self) -> list[Family]:
        return [c for c in self._ordered if isinstance(c, Family)]


class GatewayMetrics:
    """Every metric gatewayd exports. Label names: ``alias``, ``deployment``, ``status``, ``dialect``."""

    def __init__(self, native: bool | None = None) -> None:
        """``native``: keep the values in :mod:`gatewayd.metricstore` (the default in one
        process); False: in ``prometheus_client``'s metrics (always so in multiprocess
        mode, where they live in the shared files)."""
        shared = multiprocess_dir()
        if shared is not None and not os.path.isdir(shared):
            raise ConfigError(
                "PROMETHEUS_MULTIPROC_DIR",
                f"{shared!r} is not a directory: multiprocess metrics need an existing one",
            )
        self.native = shared is None if native is None else native and shared is None
        self.registry = _Registry(auto_describe=False)
        r = self.registry
        n = self.native
        self.requests = Counter(
            "gatewayd_requests_total",
            "Requests answered, by alias, the deployment that answered, HTTP status and "
            "the client's dialect (chat, responses, messages).",
            ("alias", "deployment", "status", "dialect"),
            r,
            native=n,
        )
        self.attempts = Counter(
            "gatewayd_upstream_attempts_total",
            "Upstream attempts by alias, deployment and outcome (ok, or the failure kind).",
            ("alias", "deployment", "outcome"),
            r,
            native=n,
        )
        self.retries = Counter(
            "gatewayd_retries_total",
            "Attempts made again on the same alias.",
            ("alias",),
            r,
            native=n,
        )
        self.fallbacks = Counter(
            "gatewayd_fallbacks_total",
            "Requests answered by a fallback alias.",
            ("alias", "fallback"),
            r,
            native=n,
        )
        self.stream_failures = Counter(
            "gatewayd_stream_failures_total",
            "Streams that broke off after their first byte (ended with an in-band error).",
            ("alias", "deployment"),
            r,
            native=n,
        )
        self.tokens = Counter(
            "gatewayd_tokens_total",
            "Tokens reported by upstreams' usage objects, by kind (prompt, completion).",
            ("alias", "deployment", "kind"),
            r,
            native=n,
        )
        self.key_requests = Counter(
            "gatewayd_key_requests_total",
            "Requests by client key name (never the key), alias and HTTP status.",
            ("key", "alias", "status"),
            r,
            native=n,
        )
        self.key_tokens = Counter(
            "gatewayd_key_tokens_total",
            "Tokens by client key name, alias and kind (prompt, completion); a stream that "
            "reported no usage counts its reservation.",
            ("key", "alias", "kind"),
            r,
            native=n,
        )
        self.spend = Counter(
            "gatewayd_spend_usd_total",
            "Spend in USD at the deployments' input/output_cost_per_token, by key name, alias "
            "and deployment.",
            ("key", "alias", "deployment"),
            r,
            native=n,
        )
        self.state_store_outages = Counter(
            "gatewayd_state_store_outages_total",
            "Times the shared state store became unreachable.",
            (),
            r,
            native=n,
        )
        self.state_store_up = Gauge(
            "gatewayd_state_store_up",
            "1 while the shared state store answers (or none is set).",
            (),
            r,
            mode="livemax",
        )
        self.upstream_latency = Histogram(
            "gatewayd_upstream_latency_seconds",
            "Time an upstream took to answer (a whole JSON body, or a stream's first byte).",
            ("alias", "deployment"),
            r,
            native=n,
        )
        self.ttft = Histogram(
            "gatewayd_time_to_first_token_seconds",
            "Streams: time from the request to the first event written to the client.",
            ("alias", "deployment"),
            r,
            native=n,
        )
        self.overhead = Histogram(
            "gatewayd_overhead_seconds",
            "Time spent in the gateway itself: total latency minus upstream time "
            "(JSON answers on the first attempt).",
            (),
            r,
            native=n,
        )
        self.reactor_lag = Histogram(
            "gatewayd_reactor_lag_seconds",
            "How late a periodic call fired: the event loop was blocked this long.",
            (),
            r,
            LAG_BUCKETS,
            native=n,
        )
        self.reloads = Counter(
            "gatewayd_config_reloads_total",
            "Config reloads by result (ok, error).",
            ("result",),
            r,
            native=n,
        )
        for result in ("ok", "error"):  # both series exist from the start: increase() works
            self.reloads.touch(result)
        self.last_reload = ValueGauge(
            "gatewayd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load (the start counts).",
            r,
            "max",
            native=n,
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
        return Gauge(name, help, labelnames, self.registry, mode)

    def gauges(self) -> list[Gauge]:
        return [
            self.streams_in_flight,
            self.in_flight,
            self.cooldown,
            self.client_connections,
            self.upstream_connections,
            self.state_store_up,
        ]

    def count_usage(self, alias: str, deployment: str, usage: dict[str, object] | None) -> None:
        """Add an OpenAI ``usage`` object's token counts."""
        if not usage:
            return
        for kind in ("prompt", "completion"):
            n = usage.get(f"{kind}_tokens")
            if isinstance(n, int) and n > 0:
                self.tokens.inc(alias, deployment, kind, amount=n)

    def refresh(self) -> None:
        """Multiprocess mode: push the callback gauges' values into the shared files."""
        for g in self.gauges():
            g.refresh()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and content type for ``GET /metrics``: OpenMetrics when ``accept``
        asks for it, else the Prometheus text format. In multiprocess mode, the sum
        over every process writing to the shared directory (see :meth:`merged`)."""
        if not self.native:
            self.refresh()
            return self.merged(accept)
        pieces, content_type = self.pieces(accept)
        return b"".join(pieces), content_type

    def pieces(self, accept: str | None = None) -> tuple[list[bytes], str]:
        """One process: :meth:`exposition`'s body in pieces, to be written in turn (with
        1,000 deployments it is 3 MB: joining it costs more than rendering it)."""
        _, content_type = choose_encoder(accept or "")
        if content_type.startswith("application/openmetrics-text"):
            return render_openmetrics(self.registry.families()), content_type
        return render_text(self.registry.families()), content_type

    def merged(self, accept: str | None = None) -> tuple[bytes, str]:
        """Multiprocess mode: the sum read from the shared files, without :meth:`refresh`.
        Reads files only, so it may run in a thread (it takes long: every file is read
        and merged by prometheus_client at every scrape)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._source()), content_type

    def render(self) -> bytes:
        """The Prometheus text format."""
        return self.exposition()[0]

    def _source(self) -> CollectorRegistry:
        path = multiprocess_dir()
        if path is None:
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path)  # type: ignore[no-untyped-call]
        return merged
