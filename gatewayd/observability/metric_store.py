"""Metric families kept in plain Python objects and rendered from per-series caches.

One process (no ``PROMETHEUS_MULTIPROC_DIR``): a request's updates are an addition to a
float (``prometheus_client`` takes a lock and makes two calls per update), and
``GET /metrics`` joins each series' text as it was last rendered, re-rendering only the
series that changed since (with 1,000 deployments, ``prometheus_client`` built 30,000
``Sample`` tuples and escaped every label of each, per scrape: 0.7 s).

The output is byte for byte ``prometheus_client``'s (text format 0.0.4 and OpenMetrics
1.0.0: the same sample order, label order, number formatting and ``_created`` series), so
the families, names and labels a scraper sees do not depend on the storage; each family
is also registered in the instance's :class:`~prometheus_client.CollectorRegistry`, so
``prometheus_client.generate_latest(registry)`` still works.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate

import prometheus_client.metrics as _pm
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF

Labels = tuple[str, ...]
Sample = tuple[Labels, float]


def fmt(value: float) -> str:
    """As ``prometheus_client.utils.floatToGoString``: ``repr`` but for infinities, NaN
    and values from 1e6 up (Go switches to exponents sooner than Python)."""
    if -INF < value < 1e6:
        return repr(value)
    if value == INF:
        return "+Inf"
    if value == -INF:
        return "-Inf"
    if value != value:
        return "NaN"
    s = repr(value)
    dot = s.find(".")
    if dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_str(names: Sequence[str], values: Sequence[str]) -> str:
    """``{a="x",b="y"}`` sorted by name (as ``prometheus_client`` writes them), or ``""``."""
    if not names:
        return ""
    pairs = sorted(zip(names, values, strict=True))
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _use_created() -> bool:
    # prometheus_client's switch (PROMETHEUS_DISABLE_CREATED_SERIES, disable_created_metrics).
    return bool(getattr(_pm, "_use_created", True))


class CounterSeries:
    """One label set of a counter: its value and its rendered line (None: to render)."""

    __slots__ = ("created", "created_line", "family", "prefix", "text", "value")

    def __init__(self, family: CounterFamily, labels: Labels, created: float | None = None) -> None:
        lbl = label_str(family.labelnames, labels)
        self.family = family
        self.value = 0.0
        self.text: str | None = None
        self.prefix = f"{family.name}_total{lbl} "
        self.created = time.time() if created is None else created
        self.created_line = f"{family.name}_created{lbl} {fmt(self.created)}\n"

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount
        self.text = None  # this line and its family's text are rendered at the next scrape
        self.family.dirty = True

    def render(self) -> str:
        text = self.text = f"{self.prefix}{fmt(self.value)}\n"
        return text


class HistogramSeries:
    """One label set of a histogram: per-bucket counts (not cumulative), the sum, and
    its rendered lines (None: to render)."""

    __slots__ = ("bounds", "counts", "created", "created_line", "family", "sum", "template", "text")

    def __init__(
        self, family: HistogramFamily, labels: Labels, created: float | None = None
    ) -> None:
        self.family = family
        names = (*family.labelnames, "le")
        self.bounds = bounds = family.bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.text: str | None = None
        lbl = label_str(family.labelnames, labels)
        rows = [f"{family.name}_bucket{label_str(names, (*labels, fmt(b)))} " for b in bounds]
        rows += [f"{family.name}_count{lbl} ", f"{family.name}_sum{lbl} "]
        # One %-template per series: rendering is a single C-level format call.
        self.template = "".join(r.replace("%", "%%") + "%s\n" for r in rows)
        self.created = time.time() if created is None else created
        self.created_line = f"{family.name}_created{lbl} {fmt(self.created)}\n"

    def observe(self, value: float) -> None:
        # The first bucket whose upper bound is >= value (bounds end with +Inf).
        self.counts[bisect_left(self.bounds, value)] += 1.0
        self.sum += value
        self.text = None
        self.family.dirty = True

    def cumulative(self) -> list[float]:
        return list(accumulate(self.counts))

    def render(self) -> str:
        acc = tuple(accumulate(self.counts))
        count, total = acc[-1], self.sum
        if count < 1e6 and -INF < total < 1e6:  # str(float) is repr, floatToGoString's here
            text = self.template % (*acc, count, total)
        else:
            text = self.template % (*map(fmt, acc), fmt(count), fmt(total))
        self.text = text
        return text


class Family(Collector):
    """A metric family: renders itself in both formats (appending UTF-8 to ``out``) and
    collects for a registry."""

    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        text_help = help.replace("\\", r"\\").replace("\n", r"\n")
        self.om_head = f"# HELP {name} {_escape(help)}\n# TYPE {name} {self.kind}\n"
        self.created_head = f"# HELP {name}_created {text_help}\n# TYPE {name}_created gauge\n"
        sample = f"{name}_total" if self.kind == "counter" else name
        self.text_head = f"# HELP {sample} {text_help}\n# TYPE {sample} {self.kind}\n"

    def register(self, registry: CollectorRegistry) -> None:
        registry.register(self)

    def text(self, out: list[bytes]) -> None:
        raise NotImplementedError

    def openmetrics(self, out: list[bytes]) -> None:
        raise NotImplementedError

    def collect(self) -> Iterable[Metric]:
        raise NotImplementedError


class _SeriesFamily(Family):
    """A counter or histogram: a dict of series. Its rendered text is kept until one of
    them changes (``dirty``); then only the series that changed are rendered again."""

    series: dict[Labels, CounterSeries] | dict[Labels, HistogramSeries]

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, help, labelnames)
        self.dirty = True
        self._text: bytes | None = None
        self._om: bytes | None = None

    def _texts(self) -> list[str]:
        if self.dirty:
            self.dirty = False
            self._text = self._om = None
        # Never "": a series without its text is rendered (again) here.
        return [s.text or s.render() for s in self.series.values()]

    def _created(self) -> list[str]:
        return [s.created_line for s in self.series.values()] if _use_created() else []

    def text(self, out: list[bytes]) -> None:
        if self.dirty or self._text is None:
            texts = self._texts()
            created = self._created()
            if created:
                texts += (self.created_head, *created)
            texts.insert(0, self.text_head)  # one join: megabytes are copied once less
            self._text = "".join(texts).encode()
        out.append(self._text)

    def openmetrics(self, out: list[bytes]) -> None:
        if self.dirty or self._om is None:
            texts = self._texts()
            created = self._created()
            if created:
                texts = [x for pair in zip(texts, created, strict=True) for x in pair]
            texts.insert(0, self.om_head)
            self._om = "".join(texts).encode()
        out.append(self._om)


class CounterFamily(_SeriesFamily):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        # As prometheus_client: the family is named without _total, its samples with.
        super().__init__(name.removesuffix("_total"), help, labelnames)
        self.series: dict[Labels, CounterSeries] = {}
        if not self.labelnames:
            self.child(())

    def child(self, labels: Labels, created: float | None = None) -> CounterSeries:
        """The series of ``labels``, made if new (``created``: its time, default now)."""
        s = self.series.get(labels)
        if s is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {labels!r}")
            s = self.series[labels] = CounterSeries(self, tuple(str(v) for v in labels), created)
            self.dirty = True
        return s

    def collect(self) -> Iterable[Metric]:
        m = Metric(self.name, self.help, "counter")
        for labels, s in self.series.items():
            lbl = dict(zip(self.labelnames, labels, strict=True))
            m.add_sample(self.name + "_total", lbl, s.value)
            if _use_created():
                m.add_sample(self.name + "_created", lbl, s.created)
        return [m]


class HistogramFamily(_SeriesFamily):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help, labelnames)
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != INF:
            bounds.append(INF)
        self.bounds = tuple(bounds)
        self.series: dict[Labels, HistogramSeries] = {}
        if not self.labelnames:
            self.child(())

    def child(self, labels: Labels, created: float | None = None) -> HistogramSeries:
        """The series of ``labels``, made if new (``created``: its time, default now)."""
        s = self.series.get(labels)
        if s is None:
            if len(labels) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {labels!r}")
            s = self.series[labels] = HistogramSeries(self, tuple(str(v) for v in labels), created)
            self.dirty = True
        return s

    def collect(self) -> Iterable[Metric]:
        m = Metric(self.name, self.help, "histogram")
        for labels, s in self.series.items():
            lbl = dict(zip(self.labelnames, labels, strict=True))
            acc = s.cumulative()
            for bound, n in zip(self.bounds, acc, strict=True):
                m.add_sample(self.name + "_bucket", {**lbl, "le": fmt(bound)}, n)
            m.add_sample(self.name + "_count", lbl, acc[-1])
            m.add_sample(self.name + "_sum", lbl, s.sum)
            if _use_created():
                m.add_sample(self.name + "_created", lbl, s.created)
        return [m]


class GaugeFamily(Family):
    """A gauge whose samples ``read()`` returns at every scrape (or one set value)."""

    kind = "gauge"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str], read: Callable[[], Iterable[Sample]]
    ) -> None:
        super().__init__(name, help, labelnames)
        self.read = read
        # Label sets come and go with reloads: each one's last value and line.
        self._last: dict[Labels, tuple[float, str]] = {}

    def _lines(self, head: str) -> bytes:
        lines = self._last
        parts = [head]
        for labels, value in self.read():
            last = lines.get(labels)
            if last is None or last[0] != value:  # mostly the same value as last time
                prefix = self.name + label_str(self.labelnames, labels) + " "
                last = lines[labels] = (value, f"{prefix}{fmt(float(value))}\n")
            parts.append(last[1])
        if len(lines) > 2 * len(parts) + 16:  # a reload dropped many: forget them
            lines.clear()
        return "".join(parts).encode()

    def text(self, out: list[bytes]) -> None:
        out.append(self._lines(self.text_head))

    def openmetrics(self, out: list[bytes]) -> None:
        out.append(self._lines(self.om_head))

    def collect(self) -> Iterable[Metric]:
        m = Metric(self.name, self.help, "gauge")
        for labels, value in self.read():
            m.add_sample(self.name, dict(zip(self.labelnames, labels, strict=True)), value)
        return [m]


def render_text(families: Iterable[Family]) -> list[bytes]:
    """The Prometheus text format (0.0.4), in pieces (joined, megabytes: written apart)."""
    out: list[bytes] = []
    for f in families:
        f.text(out)
    return out


def render_openmetrics(families: Iterable[Family]) -> list[bytes]:
    """OpenMetrics text (1.0.0), in pieces."""
    out: list[bytes] = []
    for f in families:
        f.openmetrics(out)
    out.append(b"# EOF\n")
    return out
