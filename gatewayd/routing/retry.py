"""How long to wait before the next attempt on the same alias."""

from __future__ import annotations

import random
from dataclasses import dataclass

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
