"""The deployments of one alias, indexed so that a pick does not walk all of them.

A deployment is *open* when it is not cooling down and below its
``max_parallel_requests``. The pool keeps the open ones in sum trees (by weight
and by count) and, for ``least-busy``, grouped by requests in flight. It is told
when a deployment's state changes (:meth:`AliasPool.changed`: a failure, a success,
a slot taken or freed) and finds cooldowns that ran out from a heap of their end
times, so each pick costs O(log n) plus O(k log n) for the k deployments this
request already tried, whatever the alias's size.
"""

from __future__ import annotations

import heapq
import random
import weakref
from collections.abc import Collection, Sequence
from typing import Any, cast

from gatewayd.routing.balancer import Candidate
from gatewayd.routing.choice import Chooser
from gatewayd.routing.cooldown import Cooldowns, DeploymentHealth, Watcher
from gatewayd.routing.pick import FewestFirst, SumTree


class AliasPool:
    """One alias's deployments and what the balancer needs to know of them."""

    def __init__(
        self,
        routes: Sequence[Candidate],
        health: Cooldowns,
        strategy: str,
        chooser: Chooser | None = None,
    ) -> None:
        self.routes = routes
        #: Picks among the open deployments for the strategies of
        #: :mod:`gatewayd.routing.strategies` (latency, affinity); None: shuffle or least-busy.
        self.chooser = chooser
        self._health = health
        self._pos = {r.id: i for i, r in enumerate(routes)}
        self._states: list[DeploymentHealth] = [health.get(r.id) for r in routes]
        n = len(routes)
        self._healthy = [True] * n
        self.healthy_count = n
        self._open = [False] * n
        self._until = [0.0] * n  # the cooldown end last pushed on the heap
        self._ends: list[tuple[float, int]] = []  # (cooldown end, position), lazily cleaned
        self._by_weight = SumTree(n)
        self._by_count = SumTree(n)
        self._busy = FewestFirst() if strategy == "least-busy" else None
        #: The requests in flight on the alias, kept for a chooser that bounds loads.
        self.total_in_flight = 0
        self._loads = [0] * n if getattr(chooser, "needs_loads", False) else None
        me = cast("weakref.ref[Watcher]", weakref.ref(self))
        for i, (r, state) in enumerate(zip(routes, self._states, strict=True)):
            # In-flight counts matter to a pick only for least-busy, a capped deployment,
            # or a chooser that bounds loads.
            busy = (
                self._busy is not None
                or r.max_parallel_requests is not None
                or self._loads is not None
            )
            (state.busy_watchers if busy else state.watchers).append(me)
            self._update(i)

    # -- keeping up with changes -------------------------------------------------

    def changed(self, deployment_id: str) -> None:
        """A deployment's cooldown or in-flight count changed."""
        i = self._pos.get(deployment_id)
        if i is not None:
            self._update(i)

    def _update(self, i: int) -> None:
        r, h = self.routes[i], self._states[i]
        if self._loads is not None:
            self.total_in_flight += h.in_flight - self._loads[i]
            self._loads[i] = h.in_flight
        cooling = h.cooling(self._health.now())
        if cooling and h.cooldown_until != self._until[i]:
            self._until[i] = h.cooldown_until
            heapq.heappush(self._ends, (h.cooldown_until, i))
        elif not cooling:
            self._until[i] = 0.0
        if self._healthy[i] == cooling:
            self._healthy[i] = not cooling
            self.healthy_count += -1 if cooling else 1
        limit = r.max_parallel_requests
        self._set_open(i, not cooling and (limit is None or h.in_flight < limit))

    def _set_open(self, i: int, is_open: bool) -> None:
        if is_open != self._open[i]:
            self._open[i] = is_open
            r = self.routes[i]
            self._by_weight.set(i, float(r.weight or 0.0) if is_open else 0.0)
            self._by_count.set(i, 1.0 if is_open else 0.0)
        if self._busy is not None:
            self._busy.place(i, self._states[i].in_flight if is_open else None)

    def refresh(self) -> None:
        """Take back the deployments whose cooldown has run out."""
        now = self._health.now()
        ends = self._ends
        while ends and ends[0][0] <= now:
            _, i = heapq.heappop(ends)
            self._update(i)

    # -- questions the router asks -------------------------------------------------

    def has_healthy_untried(self, tried: Collection[str]) -> bool:
        """Is a deployment not in cooldown and not in ``tried`` left? O(len(tried))."""
        healthy_tried = sum(
            1 for d in tried if (i := self._pos.get(d)) is not None and self._healthy[i]
        )
        return self.healthy_count > healthy_tried

    def soonest(self) -> Candidate:
        """The deployment whose cooldown ends first (the first of the alias on a tie)."""
        ends = self._ends
        while ends and (self._healthy[ends[0][1]] or self._until[ends[0][1]] != ends[0][0]):
            heapq.heappop(ends)  # superseded by a later end, or the cooldown is over
        assert ends, "soonest() is for an alias whose deployments are all cooling down"
        return self.routes[ends[0][1]]

    def choose_now(
        self, tried: Collection[str], rng: random.Random, request: Any = None
    ) -> Candidate | None:
        """Refreshed first: a healthy deployment with room (untried first, see
        :meth:`choose`), or None when none is healthy or none has room. ``request``
        (a ProviderRequest) is for the choosers that look at it."""
        self.refresh()
        return self.choose(tried, rng, request) if self.healthy_count else None

    def choose(
        self, tried: Collection[str], rng: random.Random, request: Any = None
    ) -> Candidate | None:
        """An open deployment, untried ones first; None when none is open.

        The tried ones are taken out of the trees for the pick, then put back."""
        out = [i for d in tried if (i := self._pos.get(d)) is not None and self._open[i]]
        if out and len(out) < self._by_count.total:
            for i in out:
                self._set_open(i, False)
            try:
                choice = self._choose_open(rng, request)
            finally:
                for i in out:
                    self._set_open(i, True)
            if choice is not None:
                return choice
        return self._choose_open(rng, request)

    def _choose_open(self, rng: random.Random, request: Any = None) -> Candidate | None:
        count = self._by_count.total
        if count <= 0:
            return None
        if count == 1:
            return self.routes[self._by_count.find(0.0)]
        if self.chooser is not None:
            i = self.chooser.choose(self, rng, request)
            return None if i is None else self.routes[i]
        if self._busy is not None:
            i = self._busy.fewest(rng)
            return None if i is None else self.routes[i]
        # simple-shuffle: by weight when an open one has a weight, else even. ``rpm`` is
        # a limit, not a weight (behaviour.md): the limiter skips a deployment at it.
        tree = self._by_weight
        if tree.total <= 0:
            tree = self._by_count
        return self.routes[tree.find(rng.random() * tree.total)]

    # -- what a Chooser (gatewayd.routing.choice) sees ------------------------

    @property
    def open_count(self) -> int:
        return int(self._by_count.total)

    def is_open(self, i: int) -> bool:
        return self._open[i]

    def in_flight(self, i: int) -> int:
        return self._states[i].in_flight

    def random_open(self, rng: random.Random, but: int | None = None) -> int | None:
        """An open position chosen evenly (``but`` left out), or None. O(log n)."""
        hide = but is not None and self._open[but]
        if hide:
            assert but is not None
            self._by_count.set(but, 0.0)
        try:
            total = self._by_count.total
            return self._by_count.find(rng.random() * total) if total > 0 else None
        finally:
            if hide:
                assert but is not None
                self._by_count.set(but, 1.0)

    def open_ids(self) -> list[str]:
        """The open deployments (for tests and ``/health``-time checks): O(n)."""
        return [r.id for r, o in zip(self.routes, self._open, strict=True) if o]
