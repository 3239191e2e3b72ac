"""``routing_strategy: latency-based-routing``: power of two random choices over a
peak-sensitive EWMA of each deployment's latency, weighted by its requests in flight.

The cost of a deployment is Linkerd's and Finagle's PeakEWMA: ``latency x (in flight +
1)``. Latency is time to first byte for streams, and seconds per output token for JSON
answers (a long answer is not a slow server), kept apart: a request is scored on the
kind it is. The estimate jumps up to a slower observation at once (a peak) and comes
down smoothly with faster ones, over :data:`DECAY_S`. A deployment with no observation
yet, or just out of a cooldown, is scored at the alias's median, not at zero (it would
otherwise take all the traffic). An estimate that no request has refreshed for
:data:`DECAY_S` is stale: the deployment gets the next request it is drawn for (one
probe per window), and the probe's measure replaces the estimate, so that a replica
that got slow and lost its traffic gets it back as soon as it has recovered.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime

from gatewayd.routing.balancer import Candidate
from gatewayd.routing.choice import PoolView

#: Seconds over which an estimate forgets: Linkerd's default decay window.
DECAY_S = 10.0
#: How often an alias's median is computed again (it walks the alias's deployments).
MEDIAN_REFRESH_S = 1.0
#: The score of a kind nobody has observed yet: every deployment equal, in-flight decides.
UNKNOWN = 1.0

TTFB = "ttfb"
PER_TOKEN = "per_token"
KINDS = (TTFB, PER_TOKEN)

_OUTPUT_TOKENS = re.compile(rb'"(?:completion_tokens|output_tokens)"\s*:\s*(\d+)')


@dataclass(slots=True)
class PeakEwma:
    """One deployment's estimate of one kind: ``value`` seconds, as of ``stamp``."""

    value: float
    stamp: float
    #: When a probe of a stale estimate was sent (its measure replaces the estimate).
    probed: float = -math.inf
    probing: bool = False

    def observe(self, x: float, now: float, decay: float) -> None:
        if self.probing:
            self.probing = False
            self.value = x
        elif x > self.value:
            self.value = x  # a peak is believed at once
        else:
            w = math.exp(-max(0.0, now - self.stamp) / decay)
            self.value = self.value * w + x * (1.0 - w)
        self.stamp = now


def kind_of(request: Any) -> str:
    """The kind of latency that matters to ``request``: a stream waits for its first
    byte, a JSON answer for every token."""
    return TTFB if getattr(request, "stream", False) else PER_TOKEN


#: Bytes at the end of a JSON answer searched for its usage (where OpenAI and Anthropic
#: put it): a large answer (embeddings) is not scanned whole on every request.
USAGE_TAIL = 2048


def output_tokens(body: bytes | None) -> int | None:
    """The upstream's count of output tokens in a JSON answer's usage, if it has one."""
    if not body:
        return None
    m = _OUTPUT_TOKENS.search(body, max(0, len(body) - USAGE_TAIL))
    return int(m.group(1)) if m else None


class LatencyBook:
    """Every deployment's estimates, by id: kept across reloads for ids that stay."""

    def __init__(self, clock: IReactorTime, decay: float = DECAY_S) -> None:
        self.clock = clock
        self.decay = decay
        self._est: dict[tuple[str, str], PeakEwma] = {}
        #: Bumped when an estimate appears or goes: the medians are then computed again.
        self.version = 0
        #: The deployments of aliases that route by latency: only theirs are measured
        #: (a regex over the answer's tail and an exp() per request, saved elsewhere).
        self.tracked: set[str] = set()

    def observe(self, deployment_id: str, kind: str, seconds: float) -> None:
        now = self.clock.seconds()
        e = self._est.get((deployment_id, kind))
        if e is None:
            self._est[(deployment_id, kind)] = PeakEwma(seconds, now)
            self.version += 1
        else:
            e.observe(seconds, now, self.decay)

    def observe_success(
        self, deployment_id: str, stream: bool, took: float, body: bytes | None
    ) -> None:
        """A successful attempt: ``took`` is its time to first byte (stream) or to the
        whole answer (JSON, divided by its output tokens when the usage says them)."""
        if deployment_id not in self.tracked:
            return
        if stream:
            self.observe(deployment_id, TTFB, took)
            return
        tokens = output_tokens(body)
        self.observe(deployment_id, PER_TOKEN, took / tokens if tokens else took)

    def observe_failure(self, deployment_id: str, stream: bool, took: float) -> None:
        """A failed attempt can only make its deployment look slower (a timeout is a
        peak); a fast refusal tells nothing about speed (cooldowns deal with it)."""
        kind = TTFB if stream else PER_TOKEN
        e = self._est.get((deployment_id, kind))
        if e is not None and took > e.value:
            e.value, e.stamp = took, self.clock.seconds()

    def after_failure(
        self, deployment_id: str, stream: bool, started: float, tripped: bool
    ) -> None:
        """A failed attempt started at ``started``; ``tripped``: it put its deployment
        in cooldown (then the estimate is dropped: back, it starts at the median)."""
        if tripped:
            self.forget(deployment_id)
        else:
            self.observe_failure(deployment_id, stream, self.clock.seconds() - started)

    def samples(
        self, routes: Mapping[str, Sequence[Candidate]]
    ) -> list[tuple[tuple[str, str, str], float]]:
        """The ``gatewayd_deployment_latency_seconds`` samples: (alias, deployment, kind)
        for each estimate there is."""
        out = []
        for alias, rs in routes.items():
            for r in rs:
                for kind in KINDS:
                    e = self._est.get((r.id, kind))
                    if e is not None:
                        out.append(((alias, r.id, kind), e.value))
        return out

    def forget(self, deployment_id: str) -> None:
        """The deployment went into cooldown: when it is back it starts at the median."""
        for kind in KINDS:
            if self._est.pop((deployment_id, kind), None) is not None:
                self.version += 1

    def raw(self, deployment_id: str, kind: str) -> float | None:
        """The estimate as last observed (no drift), or None."""
        e = self._est.get((deployment_id, kind))
        return None if e is None else e.value

    def estimate(self, deployment_id: str, kind: str, median: float) -> float:
        """The estimate, or ``median`` when there is none."""
        e = self._est.get((deployment_id, kind))
        return median if e is None else e.value

    def take_probe(self, deployment_id: str, kind: str, now: float) -> bool:
        """True (and the probe booked) when the estimate is stale: not refreshed, nor
        probed, for :attr:`decay` seconds."""
        e = self._est.get((deployment_id, kind))
        if e is None or now - max(e.stamp, e.probed) < self.decay:
            return False
        e.probed, e.probing = now, True
        return True

    def retain_only(self, ids: Iterable[str]) -> None:
        keep = set(ids)
        self.tracked &= keep
        for key in [k for k in self._est if k[0] not in keep]:
            del self._est[key]


class LatencyChooser:
    """P2C for one alias: two open deployments at random, the cheaper one wins."""

    def __init__(self, book: LatencyBook, ids: list[str]) -> None:
        self.book = book
        self.ids = ids
        book.tracked.update(ids)
        #: kind -> (computed at, the book's version then, median)
        self._medians: dict[str, tuple[float, int, float]] = {}

    def median(self, kind: str, now: float) -> float:
        """The median of the alias's known estimates (:data:`UNKNOWN` when none is),
        computed at most every :data:`MEDIAN_REFRESH_S`, and whenever a deployment got its
        first estimate or lost it."""
        cached = self._medians.get(kind)
        version = self.book.version
        if cached is not None and now - cached[0] < MEDIAN_REFRESH_S and cached[1] == version:
            return cached[2]
        known = sorted(v for i in self.ids if (v := self.book.raw(i, kind)) is not None)
        if not known:
            value = UNKNOWN
        else:
            mid = len(known) // 2
            value = known[mid] if len(known) % 2 else (known[mid - 1] + known[mid]) / 2
        self._medians[kind] = (now, version, value)
        return value

    def cost(self, pool: PoolView, i: int, kind: str, now: float) -> float:
        latency = self.book.estimate(self.ids[i], kind, self.median(kind, now))
        return latency * (pool.in_flight(i) + 1)

    def choose(self, pool: PoolView, rng: random.Random, request: Any) -> int | None:
        a = pool.random_open(rng)
        if a is None or pool.open_count < 2:
            return a
        b = pool.random_open(rng, but=a)
        if b is None:
            return a
        kind, now = kind_of(request), self.book.clock.seconds()
        for i in (a, b):
            if self.book.take_probe(self.ids[i], kind, now):
                return i
        ca, cb = self.cost(pool, a, kind, now), self.cost(pool, b, kind, now)
        if math.isclose(ca, cb, rel_tol=1e-6):
            return a  # a tie (up to rounding): a is already a random one of the two
        return a if ca < cb else b
