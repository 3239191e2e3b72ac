"""How long to wait before the next attempt on the same alias."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from gatewayd.routing.pool import AliasPool
from gatewayd.upstream.outcomes import UpstreamFailure

BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
#: Fraction of each backoff taken off at random, so clients that failed together
#: do not retry together.
JITTER = 0.25


@dataclass(frozen=True)
class RetryPolicy:
    """Retries per alias and the backoff schedule between them."""

    num_retries: int = 0
    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    jitter: float = JITTER
    #: The longest ``Retry-After`` honoured by sleeping; longer moves on to fallbacks.
    max_retry_after: float = BACKOFF_CAP

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds before retry number ``retry`` (1 = the first retry)."""
        delay = min(self.cap, self.base * (2 ** max(0, retry - 1)))
        return float(delay * (1.0 - self.jitter * rng.random()))

    def wait_before_retry(
        self, retry: int, retry_after: float | None, rng: random.Random
    ) -> float | None:
        """The sleep before retry ``retry``: the upstream's ``Retry-After`` when it gave one
        (None if longer than :attr:`max_retry_after`: give up on this alias), else backoff."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self.backoff(retry, rng)


def wait_before_next(
    policy: RetryPolicy,
    rng: random.Random,
    retry: int,
    f: UpstreamFailure,
    pool: AliasPool,
    tried: set[str],
    can_skip: bool,
) -> float | None:
    """Seconds to sleep before the next attempt on this alias, or None to give up on
    it: none while another healthy deployment is left; give up when the upstream asked
    for too long a wait, or when a fallback is left and every deployment is cooling
    down or the last one refused the connection (never wait on a deployment known to
    be down: a refused port is down now, and sleeping before asking it again only
    delays the fallback that would answer)."""
    pool.refresh()
    if pool.has_healthy_untried(tried):
        return 0.0
    if can_skip and (f.refused or not pool.healthy_count):
        return None
    return policy.wait_before_retry(retry, f.retry_after, rng)


async def owed_backoff(
    policy: RetryPolicy,
    rng: random.Random,
    clock: IReactorTime,
    retry: int,
    f: UpstreamFailure,
    pool: AliasPool,
    skip: set[str],
    can_skip: bool,
    ticket: Any,
) -> None:
    """Sleep the backoff a retry skipped for a deployment that then turned out to be
    at its limit; re-raise ``f`` (giving the reservation back) when the wait would be
    too long or every deployment is cooling down and a fallback is left."""
    wait = wait_before_next(policy, rng, retry, f, pool, skip, can_skip)
    try:
        if wait is None:
            raise f
        if wait > 0:
            await deferLater(clock, wait)
    except BaseException:
        if ticket is not None:
            ticket.settle(None, served=False)  # never sent
        raise
