"""Prometheus metrics in the text exposition format, without a client library.

A leaf module: the router and the web layer record into one :class:`GatewayMetrics`
owned by the service; ``GET /metrics`` renders it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence

Labels = tuple[str, ...]
Sample = tuple[Labels, float]

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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(Metric):
    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def lines(self) -> list[str]:
        return [
            f"{self.name}{_labels(self.labelnames, k)} {_num(v)}"
            for k, v in sorted(self.values.items())
        ]


class Gauge(Metric):
    """A gauge read at scrape time from a callback (in-flight counts, cooldown states)."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        collect: Callable[[], Iterable[Sample]] | None = None,
    ) -> None:
        super().__init__(name, help, labelnames)
        self.collect = collect or (lambda: ())

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_num(v)}" for k, v in self.collect()]


class Histogram(Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames)
        self.buckets = tuple(buckets)
        self.values: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect.bisect_left(self.buckets, value)] += 1
        entry[1][0] += value

    def lines(self) -> list[str]:
        out = []
        for k, (counts, total) in sorted(self.values.items()):
            cumulative = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += n
                le = f'le="{_num(bound)}"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, k, le)} {cumulative}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, k)} {_num(total[0])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, k)} {cumulative}")
        return out


class GatewayMetrics:
    """Every metric gatewayd exports. Label names: ``alias``, ``deployment``, ``status``, ``dialect``."""

    def __init__(self) -> None:
        self.requests = Counter(
            "gatewayd_requests_total",
            "Requests answered, by alias, the deployment that answered, HTTP status and "
            "the client's dialect (chat, responses, messages).",
            ("alias", "deployment", "status", "dialect"),
        )
        self.attempts = Counter(
            "gatewayd_upstream_attempts_total",
            "Upstream attempts by alias, deployment and outcome (ok, or the failure kind).",
            ("alias", "deployment", "outcome"),
        )
        self.retries = Counter(
            "gatewayd_retries_total", "Attempts made again on the same alias.", ("alias",)
        )
        self.fallbacks = Counter(
            "gatewayd_fallbacks_total",
            "Requests answered by a fallback alias.",
            ("alias", "fallback"),
        )
        self.stream_failures = Counter(
            "gatewayd_stream_failures_total",
            "Streams that broke off after their first byte (ended with an in-band error).",
            ("alias", "deployment"),
        )
        self.tokens = Counter(
            "gatewayd_tokens_total",
            "Tokens reported by upstreams' usage objects, by kind (prompt, completion).",
            ("alias", "deployment", "kind"),
        )
        self.upstream_latency = Histogram(
            "gatewayd_upstream_latency_seconds",
            "Time an upstream took to answer (a whole JSON body, or a stream's first byte).",
            ("alias", "deployment"),
        )
        self.ttft = Histogram(
            "gatewayd_time_to_first_token_seconds",
            "Streams: time from the request to the first event written to the client.",
            ("alias", "deployment"),
        )
        self.overhead = Histogram(
            "gatewayd_overhead_seconds",
            "Time spent in the gateway itself: total latency minus upstream time "
            "(JSON answers on the first attempt).",
        )
        self.streams_in_flight = Gauge(
            "gatewayd_streams_in_flight", "Streams being relayed right now."
        )
        self.in_flight = Gauge(
            "gatewayd_deployment_in_flight",
            "Upstream requests in flight per deployment.",
            ("alias", "deployment"),
        )
        self.cooldown = Gauge(
            "gatewayd_deployment_cooldown",
            "1 while a deployment is in cooldown, else 0.",
            ("alias", "deployment"),
        )
        self.open_streams = 0
        self.streams_in_flight.collect = lambda: [((), float(self.open_streams))]

    def count_usage(self, alias: str, deployment: str, usage: dict[str, object] | None) -> None:
        """Add an OpenAI ``usage`` object's token counts."""
        if not usage:
            return
        for kind in ("prompt", "completion"):
            n = usage.get(f"{kind}_tokens")
            if isinstance(n, int) and n > 0:
                self.tokens.inc(alias, deployment, kind, amount=n)

    def all(self) -> list[Metric]:
        return [
            self.requests,
            self.attempts,
            self.retries,
            self.fallbacks,
            self.stream_failures,
            self.tokens,
            self.upstream_latency,
            self.ttft,
            self.overhead,
            self.streams_in_flight,
            self.in_flight,
            self.cooldown,
        ]

    def render(self) -> bytes:
        """The exposition text for ``GET /metrics``."""
        lines: list[str] = []
        for m in self.all():
            lines += m.header()
            lines += m.lines()
        return ("\n".join(lines) + "\n").encode()
