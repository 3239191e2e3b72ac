"""The kinds of metric :class:`gatewayd.observability.metrics.GatewayMetrics` declares.

Each keeps its values in :mod:`gatewayd.observability.metric_store` in one process; with
``PROMETHEUS_MULTIPROC_DIR`` set (``--workers N``), in this process's shared files
(:mod:`gatewayd.observability.metric_share`), and the families are filled from every process's files
at scrape (:mod:`gatewayd.observability.metric_merge`). ``native=False`` keeps them in
:mod:`prometheus_client`'s metrics instead (the reference the tests compare with).
A label set's child is looked up once, then found in a dict: label sets are never removed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram
from prometheus_client.registry import Collector

from gatewayd.observability.metric_merge import Merger
from gatewayd.observability.metric_share import SharedGauge, SharedStore
from gatewayd.observability.metric_store import (
    CounterFamily,
    Family,
    GaugeFamily,
    HistogramFamily,
    Labels,
    Sample,
)

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

GaugeMode = Literal["livesum", "livemax"]


def multiprocess_dir() -> str | None:
    """The directory shared by worker processes (``PROMETHEUS_MULTIPROC_DIR``), else None."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    return path or None


class _Labelled:
    """What counters and histograms share: label sets' children found in a dict (label
    sets are never removed: each is looked up once, then found there)."""

    def __init__(self, name: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.labelnames = tuple(labelnames)
        #: metricstore series, shared-file series, or prometheus_client's children.
        self._children: dict[Labels, Any] = {}
        self._new: Callable[[Labels], Any] = self._missing

    def _missing(self, labels: Labels) -> Any:
        raise NotImplementedError

    def _cache(self, labels: Labels, child: Any) -> Any:
        self._children[labels] = child
        return child

    def _check(self, labels: Labels) -> Labels:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {labels!r}")
        return tuple(str(v) for v in labels)


class Counter(_Labelled):
    """``inc(*label_values, amount=1)``: a :class:`CounterFamily` in one process, slots
    in the shared files with workers (``shared``), or a :class:`prometheus_client.Counter`."""

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        native: bool = True,
        shared: Merger | None = None,
    ) -> None:
        super().__init__(name, labelnames)
        self.family: CounterFamily | None = None
        if shared is not None:  # the family only renders: the merger fills it
            self.family = CounterFamily(name, help, self.labelnames)
            self.family.register(registry)
            shared.counter(name, self.family)
            store = shared.store
            self._new = lambda labels: self._cache(labels, store.counter(name, self._check(labels)))
            if not self.labelnames:
                self._new(())
        elif native:
            self.family = CounterFamily(name, help, self.labelnames)
            self.family.register(registry)
            self._children = self.family.series
            self._new = self.family.child
        else:
            metric = _Counter(name, help, self.labelnames, registry=registry)
            self._children = {} if self.labelnames else {(): metric}
            self._new = lambda labels: self._cache(labels, metric.labels(*labels))

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._new(labels)
        child.inc(amount)

    def touch(self, *labels: str) -> None:
        """Create the series at 0 (so that ``increase()`` sees its first increment)."""
        if labels not in self._children:
            self._new(labels)


class Histogram(_Labelled):
    """``observe(value, *label_values)``: a :class:`HistogramFamily` in one process, slots
    in the shared files with workers (``shared``), or a :class:`prometheus_client.Histogram`."""

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        native: bool = True,
        shared: Merger | None = None,
    ) -> None:
        super().__init__(name, labelnames)
        self.family: HistogramFamily | None = None
        if shared is not None:  # the family only renders: the merger fills it
            family = self.family = HistogramFamily(name, help, self.labelnames, buckets)
            family.register(registry)
            shared.histogram(name, family)
            store = shared.store
            self._new = lambda labels: self._cache(
                labels, store.histogram(name, self._check(labels), family.bounds)
            )
            if not self.labelnames:
                self._new(())
        elif native:
            self.family = HistogramFamily(name, help, self.labelnames, buckets)
            self.family.register(registry)
            self._children = self.family.series
            self._new = self.family.child
        else:
            metric = _Histogram(name, help, self.labelnames, registry=registry, buckets=buckets)
            self._children = {} if self.labelnames else {(): metric}
            self._new = lambda labels: self._cache(labels, metric.labels(*labels))

    def observe(self, value: float, *labels: str) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._new(labels)
        child.observe(value)


class ValueGauge:
    """A gauge without labels set by its owner (``set(value)``); with workers, ``mode``
    says how the processes' values combine."""

    def __init__(
        self,
        name: str,
        help: str,
        registry: CollectorRegistry,
        mode: Literal["max"] = "max",
        native: bool = True,
        shared: Merger | None = None,
    ) -> None:
        self.name = name
        self.value = 0.0
        self.family: GaugeFamily | None = None
        self._client: _Gauge | None = None
        self._slot: SharedGauge | None = None
        if shared is not None:
            self.family = GaugeFamily(name, help, (), shared.gauge(mode, name))
            self.family.register(registry)
            self._slot = shared.store.gauge(mode, name, ())
        elif native:
            self.family = GaugeFamily(name, help, (), lambda: [((), self.value)])
            self.family.register(registry)
        else:
            self._client = _Gauge(name, help, registry=registry, multiprocess_mode=mode)

    def set(self, value: float) -> None:
        self.value = float(value)
        if self._slot is not None:
            self._slot.set(self.value)
        if self._client is not None:
            self._client.set(value)


class Gauge:
    """A gauge read at scrape time from ``collect`` (in-flight counts, cooldown states).

    ``collect`` is an attribute the gauge's owner sets; it returns ``(label_values,
    value)`` pairs. In one process it is called on every scrape; with workers
    (``shared``) :meth:`refresh` copies its values into this process's shared file
    (``mode`` says how the live processes' values combine)."""

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
        mode: GaugeMode = "livesum",
        shared: Merger | None = None,
    ) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.mode = mode
        self.collect: Callable[[], Iterable[Sample]] = lambda: ()
        self._store: SharedStore | None = None
        self._written: dict[Labels, float] = {}  # shared: the values in the file
        self._children: dict[Labels, SharedGauge] = {}
        if shared is not None:
            self._store = shared.store
            self.family = GaugeFamily(name, help, self.labelnames, shared.gauge(mode, name))
        else:  # read through a lambda: the owner replaces ``collect``
            self.family = GaugeFamily(name, help, self.labelnames, lambda: self.collect())
        self.family.register(registry)

    def refresh(self) -> None:
        """Shared mode: write the callback's current values to this process's file.
        Label sets that went away (a reload) are set to 0, as prometheus_client's
        multiprocess mode does. Only changed values are written (this runs twice a
        second: 2,000 label sets with 1,000 deployments)."""
        store = self._store
        if store is None:
            return
        now = dict(self.collect())
        written, children = self._written, self._children
        if now == written:  # mostly: one C-level compare of 2,000 entries
            return
        new = [labels for labels in now if labels not in children]
        if new:  # in one go: 2,000 label sets at the first refresh with 1,000 deployments
            strs = [tuple(str(v) for v in labels) for labels in new]
            children.update(zip(new, store.gauges(self.mode, self.name, strs), strict=True))
        for labels, value in now.items():
            if written.get(labels) != value:
                children[labels].set(value)
        for gone in written.keys() - now.keys():
            children[gone].set(0.0)
        self._written = now


class OrderedRegistry(CollectorRegistry):
    """A registry that remembers the order of its collectors (the order they render in)."""

    def __init__(self, auto_describe: bool = False) -> None:
        super().__init__(auto_describe=auto_describe)
        self._ordered: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self._ordered.append(collector)

    def families(self) -> list[Family]:
        return [c for c in self._ordered if isinstance(c, Family)]
