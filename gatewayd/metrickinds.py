"""The kinds of metric :class:`gatewayd.metrics.GatewayMetrics` declares.

Each keeps its values in :mod:`gatewayd.metricstore` in one process, or in
:mod:`prometheus_client`'s metrics in multiprocess mode (set ``PROMETHEUS_MULTIPROC_DIR``
before start: the values then live in the shared files, summed over processes at scrape).
A label set's child is looked up once, then found in a dict: label sets are never removed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from prometheus_client import CollectorRegistry, values
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram
from prometheus_client.registry import Collector

from gatewayd.metricstore import (
    CounterFamily,
    CounterSeries,
    Family,
    GaugeFamily,
    HistogramFamily,
    HistogramSeries,
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
