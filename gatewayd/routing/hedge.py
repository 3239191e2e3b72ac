"""Hedged requests: when an attempt has no first byte after a delay, the same request
goes to another deployment too; the first to answer wins and the others are cancelled
(their connections closed, so their servers stop generating).

The delay is fixed (``after_ms``) or the alias's observed quantile of time to first
byte (``after_quantile``, once :data:`MIN_SAMPLES` answers have been seen). Hedges
stay under ``budget_percent`` of the alias's requests in any rolling minute, so a slow
fleet never doubles its own load. Never hedged: endpoints with side effects (anything
but completions, chat, embeddings, Responses and Messages), a request pinned to one
deployment, an alias whose deployments have rpm/tpm limits, and a request whose key is
at its limit (``ProviderRequest.hedge`` is False).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from gatewayd.config.fleet import HedgeSettings
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.providers.base import Endpoint, ProviderRequest, UpstreamFailure
from gatewayd.routing.attempt import Attempt, Attempts
from gatewayd.routing.classify import Verdict, classify
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.outcome import Progress, outcome_label, reason
from gatewayd.routing.pool import AliasPool
from gatewayd.routing.table import Route, RoutingTable

#: The endpoints a second copy of cannot hurt (no files, batches, fine-tunes ...).
HEDGEABLE = frozenset(
    {
        Endpoint.CHAT,
        Endpoint.COMPLETIONS,
        Endpoint.EMBEDDINGS,
        Endpoint.RESPONSES,
        Endpoint.MESSAGES,
        Endpoint.COUNT_TOKENS,
    }
)
#: Answers seen before ``after_quantile`` hedges (a quantile of fewer is noise).
MIN_SAMPLES = 20
#: Recent times to first byte kept per alias for its quantile.
WINDOW = 200
#: The budget's window, in one-second buckets.
MINUTE = 60


class RollingMinute:
    """Requests and hedges of one alias in the last minute, in one-second buckets."""

    def __init__(self) -> None:
        self._requests = [0] * MINUTE
        self._hedges = [0] * MINUTE
        self._second = [0] * MINUTE

    def _bucket(self, now: float) -> int:
        second = int(now)
        i = second % MINUTE
        if self._second[i] != second:
            self._second[i], self._requests[i], self._hedges[i] = second, 0, 0
        return i

    def _live(self, now: float, counts: list[int]) -> int:
        floor = int(now) - MINUTE
        return sum(c for c, s in zip(counts, self._second, strict=True) if s > floor)

    def count_request(self, now: float) -> None:
        self._requests[self._bucket(now)] += 1

    def allows(self, now: float, percent: float) -> bool:
        """One more hedge keeps hedges within ``percent`` of the minute's requests."""
        hedges = self._live(now, self._hedges) + 1
        return hedges * 100.0 <= percent * self._live(now, self._requests)

    def count_hedge(self, now: float) -> None:
        self._hedges[self._bucket(now)] += 1


class Hedging:
    """The hedging state of one router: each alias's budget and recent first bytes."""

    def __init__(self, clock: IReactorTime, metrics: GatewayMetrics) -> None:
        self.clock = clock
        self.metrics = metrics
        self.minutes: dict[str, RollingMinute] = {}
        self.samples: dict[str, deque[float]] = {}
        self._quantiles: dict[str, tuple[float, int, float]] = {}  # alias -> (at, n, value)

    def observe(self, alias: str, seconds: float) -> None:
        """A first byte (or a JSON answer) of ``alias`` came after ``seconds``."""
        window = self.samples.get(alias)
        if window is None:
            window = self.samples[alias] = deque(maxlen=WINDOW)
        window.append(seconds)

    def delay(self, alias: str, settings: HedgeSettings) -> float | None:
        """Seconds to wait before hedging, or None (not enough samples yet)."""
        if settings.after_ms is not None:
            return settings.after_ms / 1000.0
        assert settings.after_quantile is not None
        window = self.samples.get(alias)
        if window is None or len(window) < MIN_SAMPLES:
            return None
        now = self.clock.seconds()
        cached = self._quantiles.get(alias)
        if cached is not None and now - cached[0] < 1.0:
            return cached[2]
        ordered = sorted(window)
        value = ordered[min(len(ordered) - 1, int(settings.after_quantile * len(ordered)))]
        self._quantiles[alias] = (now, len(ordered), value)
        return value

    def minute(self, alias: str) -> RollingMinute:
        m = self.minutes.get(alias)
        if m is None:
            m = self.minutes[alias] = RollingMinute()
        return m


def hedgeable(request: ProviderRequest) -> bool:
    """Whether a second copy of ``request`` may be sent at all."""
    return request.endpoint in HEDGEABLE and request.pin is None and getattr(request, "hedge", True)


class Race:
    """One request's attempts racing to a first byte.

    ``result`` fires with ``(winner, response)``; when every attempt failed, with the
    last failure (:attr:`current` is then the attempt that failed last). ``launch``
    starts one more attempt on another deployment (None: there is none to hedge to);
    ``lost`` books an attempt that failed while another was still running."""

    def __init__(
        self,
        alias: str,
        first: Attempt,
        delay: float,
        settings: HedgeSettings,
        hedging: Hedging,
        launch: Callable[[], Attempt | None],
        lost: Callable[[Attempt, UpstreamFailure], None],
    ) -> None:
        self.alias = alias
        self.settings = settings
        self.hedging = hedging
        self.launch = launch
        self.lost = lost
        self.delay = delay
        self.current = first
        #: ``primary`` or ``hedge``: which one won (None until one has).
        self.winner: str | None = None
        self.pending: list[Attempt] = []
        #: The race is decided (won, lost or abandoned): later outcomes are only freed.
        self.settled = False
        self.extra = 0
        self.result: Deferred[tuple[Attempt, Any]] = Deferred(lambda _: self._cancel_all())
        self._timer: IDelayedCall | None = None
        self.first = first
        hedging.minute(alias).count_request(hedging.clock.seconds())
        self._watch(first)
        self._arm()

    def _arm(self) -> None:
        if not self.settled and self.extra < self.settings.max_extra:
            self._timer = self.hedging.clock.callLater(self.delay, self._hedge)

    def _hedge(self) -> None:
        self._timer = None
        if self.settled:
            return
        clock, minute = self.hedging.clock, self.hedging.minute(self.alias)
        if not minute.allows(clock.seconds(), self.settings.budget_percent):
            return  # over budget: this request waits for what it has
        attempt = self.launch()
        if attempt is None:
            return
        minute.count_hedge(clock.seconds())
        self.extra += 1
        self.hedging.metrics.hedges_sent.inc(self.alias)
        self._watch(attempt)
        self._arm()

    def _watch(self, attempt: Attempt) -> None:
        self.pending.append(attempt)
        attempt.sent.addCallbacks(
            lambda response: self._won(attempt, response),
            lambda failure: self._failed(attempt, failure),
        )

    def _won(self, attempt: Attempt, response: Any) -> None:
        self.pending.remove(attempt)
        if self.settled:  # a late success of a loser (its cancel came too late)
            self._drop(attempt)
            return
        self.settled = True
        self._stop_timer()
        self.current = attempt
        self.winner = "primary" if attempt is self.first else "hedge"
        metrics = self.hedging.metrics
        if self.winner == "hedge":
            metrics.hedges_won.inc(self.alias)
        self.hedging.observe(self.alias, self.hedging.clock.seconds() - attempt.started)
        for other in list(self.pending):
            metrics.hedges_cancelled.inc(self.alias)
            other.sent.cancel()  # closes its connection; _failed frees its slot
        self.result.callback((attempt, response))

    def _failed(self, attempt: Attempt, failure: Failure) -> None:
        self.pending.remove(attempt)
        if self.settled:  # cancelled as a loser, or the whole race was cancelled
            self._drop(attempt)
            return
        if self.pending and isinstance(failure.value, UpstreamFailure):
            self.lost(attempt, failure.value)  # another copy is still running
            return
        # The last copy running failed: so does the race (a hedge not sent yet is not
        # waited for: the router's retries take over, as without hedging).
        self.settled = True
        self._stop_timer()
        self.current = attempt
        self._cancel_pending()
        self.result.errback(failure)

    @staticmethod
    def _drop(attempt: Attempt) -> None:
        if attempt.ticket is not None:
            attempt.ticket.settle(None)
        attempt.release()

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _cancel_pending(self) -> None:
        for other in list(self.pending):
            other.sent.cancel()

    def _cancel_all(self) -> None:
        """The request was abandoned (client gone, request_timeout): every copy stops."""
        self.settled = True
        self._stop_timer()
        self._cancel_pending()


class Hedger:
    """Starts the races of one router's hedged requests (:meth:`race`)."""

    def __init__(
        self,
        hedging: Hedging,
        attempts: Attempts,
        health: Cooldowns,
        rng: random.Random,
        tripped: Callable[[str, float], None] | None = None,
    ) -> None:
        self.hedging = hedging
        self.attempts = attempts
        self.health = health
        self.rng = rng
        #: Told when a copy's failure puts its deployment in cooldown (to share it).
        self.tripped = tripped

    def observe(self, table: RoutingTable, alias: str, seconds: float) -> None:
        """An answer that was not raced: counted for an ``after_quantile`` alias."""
        settings = table.config.general.hedge_for(table.origin(alias))
        if settings is not None and settings.after_quantile is not None:
            self.hedging.observe(alias, seconds)

    def race(
        self,
        table: RoutingTable,
        pool: AliasPool,
        alias: str,
        request: ProviderRequest,
        progress: Progress,
        first: Attempt,
        tried: set[str],
        unlimited: bool,
    ) -> Race | None:
        """A race for ``first`` when ``alias`` hedges this request; None: it does not
        (no hedge setting, an endpoint with side effects, a pin, rpm/tpm limits on the
        alias, no quantile yet). Deployments hedged to are added to ``tried``."""
        settings = table.config.general.hedge_for(table.origin(alias))
        if settings is None or not unlimited or not hedgeable(request):
            return None
        delay = self.hedging.delay(alias, settings)
        if delay is None:
            return None
        metrics = self.hedging.metrics

        def launch() -> Attempt | None:
            choice = pool.choose_now(tried, self.rng, request)
            if choice is None or choice.id in tried:
                return None  # no other deployment open: nothing to hedge to
            assert isinstance(choice, Route)
            tried.add(choice.id)
            return self.attempts.launch(table, choice, None, request, progress)

        def lost(attempt: Attempt, f: UpstreamFailure) -> None:
            dep = attempt.route.id
            metrics.attempts.inc(alias, dep, outcome_label(f))
            progress.failed[alias] = reason(f)
            transient = classify(f) is Verdict.RETRY
            if self.health.failure(dep, f.message, f.status, transient=transient):
                if self.tripped is not None:
                    self.tripped(dep, self.health.get(dep).cooldown_until)
            attempt.release()

        return Race(alias, first, delay, settings, self.hedging, launch, lost)
