"""Choosing the deployment for each attempt: healthy and untried first, waiting (FIFO)
for room under ``max_parallel_requests``, skipping those at their rpm/tpm limit."""

from __future__ import annotations

import random
from typing import Any

from gatewayd.limits import Limiter, LimitExceeded, estimate
from gatewayd.providers.base import ProviderRequest
from gatewayd.routing.balancer import Balancer
from gatewayd.routing.outcome import AllCoolingDown, AllLimited, Progress
from gatewayd.routing.pool import AliasPool
from gatewayd.routing.table import Route


class Picker:
    """Picks for one :class:`~gatewayd.routing.Router`."""

    def __init__(self, balancer: Balancer, rng: random.Random) -> None:
        self.balancer = balancer
        self.rng = rng
        #: Deployment rpm/tpm limits (set by the service); None = no limits anywhere.
        self.limiter: Limiter | None = None

    async def admitted(
        self,
        alias: str,
        pool: AliasPool,
        tried: set[str],
        can_skip: bool,
        request: ProviderRequest,
        progress: Progress,
    ) -> tuple[Route, Any]:
        """:meth:`_pick`, skipping deployments at their rpm/tpm limit (each refusal is
        remembered for this request); raises :class:`AllLimited` when none is left."""
        if self.limiter is None:
            return await self.pick(alias, pool, tried, can_skip, request), None
        while True:
            limited = progress.limited
            route = await self.pick(alias, pool, tried | limited.keys(), can_skip, request)
            if route.id in limited:
                # Every untried deployment is limited: a tried one that is not, if any.
                route = await self.pick(alias, pool, set(limited), can_skip, request)
                if route.id in limited:
                    raise AllLimited()
            if route.deployment.rpm is None and route.deployment.tpm is None:
                return route, None
            if progress.estimate is None:
                progress.estimate = estimate(request.body)
            try:
                ticket = await self.limiter.admit_deployment(route.deployment, progress.estimate)
            except LimitExceeded as e:
                progress.limited[route.id] = e.refusal
                continue
            return route, ticket

    async def pick(
        self,
        alias: str,
        pool: AliasPool,
        tried: set[str],
        can_skip: bool,
        request: ProviderRequest | None = None,
    ) -> Route:
        """A deployment for the next attempt: healthy and untried first; waits (FIFO)
        while all are at ``max_parallel_requests``. O(log n) in the alias's deployments."""
        while True:
            choice = pool.choose_now(tried, self.rng, request)
            if choice is None and not pool.healthy_count:
                if can_skip:
                    raise AllCoolingDown()
                # Nowhere else to go: probe the one whose cooldown ends first.
                probe = pool.soonest()
                choice = probe if self.balancer.has_room(probe) else None
            if choice is not None:
                assert isinstance(choice, Route)
                return choice
            await self.balancer.wait_for_room(alias)
