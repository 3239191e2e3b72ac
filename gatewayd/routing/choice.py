"""The seam between an alias's pool and the strategies that pick by more than weight
or in-flight count (``latency-based-routing``, ``prefix-affinity``).

The pool keeps which deployments are open (healthy, with room, not yet tried by this
request); a :class:`Chooser` picks one of those by position, in O(log n) or close."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol

from gatewayd.routing.balancer import Candidate


class PoolView(Protocol):
    """What a chooser may ask of an alias's pool (:class:`gatewayd.routing.pool.AliasPool`)."""

    @property
    def routes(self) -> Sequence[Candidate]: ...

    @property
    def open_count(self) -> int: ...

    #: Requests in flight on the alias's deployments (kept for a chooser whose
    #: ``needs_loads`` is True).
    total_in_flight: int

    def is_open(self, i: int) -> bool: ...

    def in_flight(self, i: int) -> int: ...

    def random_open(self, rng: random.Random, but: int | None = None) -> int | None: ...


class Chooser(Protocol):
    """Picks an open deployment of one alias for a request."""

    def choose(self, pool: PoolView, rng: random.Random, request: Any) -> int | None:
        """The position of an open deployment (``pool.is_open``), or None when none is.
        ``request`` is the :class:`~gatewayd.providers.base.ProviderRequest` (may be None:
        a caller that has none, such as a benchmark)."""
        ...
