"""The router's routing table and alias pools, swapped whole on reload (in steps, so
that a reload of thousands of deployments never stalls the reactor), and the gauges
read from them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from gatewayd.config.model import GeneralSettings
from gatewayd.observability.metrics import Sample
from gatewayd.routing.cooldown import Cooldowns, DeploymentHealth
from gatewayd.routing.latency import LatencyBook
from gatewayd.routing.pool import AliasPool
from gatewayd.routing.retry import RetryPolicy
from gatewayd.routing.strategies import pools_for
from gatewayd.routing.table import RoutingTable

#: Deployments' worth of swap work between two yields of :meth:`TableSwap.swap_in_steps`
#: (building 100 pools' entries takes about a millisecond).
SWAP_STEP = 100


class TableSwap:
    """The table a :class:`~gatewayd.routing.Router` routes by, and its swap."""

    health: Cooldowns
    latency: LatencyBook
    table: RoutingTable
    policy: RetryPolicy
    _pools: Mapping[str, AliasPool]
    _unlimited: frozenset[str]
    _gauge_keys: tuple[RoutingTable | None, list[tuple[tuple[str, str], str]]]

    def _gauge(self, read: Callable[[DeploymentHealth, float], float]) -> list[Sample]:
        now, get, table = self.health.now(), self.health.get, self.table
        if self._gauge_keys[0] is not table:  # label tuples made once per table
            keys = [((r.model_name, r.id), r.id) for rs in table.routes.values() for r in rs]
            self._gauge_keys = (table, keys)
        return [(labels, float(read(get(i), now))) for labels, i in self._gauge_keys[1]]

    def _apply(self, g: GeneralSettings) -> None:
        self.health.allowed_fails = g.allowed_fails
        self.health.cooldown_time = g.cooldown_time
        self.policy = RetryPolicy(num_retries=g.num_retries, max_retry_after=g.max_retry_after)

    def swap(self, table: RoutingTable) -> None:
        """Route new requests by ``table``; requests in flight finish on the old one.
        What is known of deployments that stay (cooldowns, in-flight counts) is kept."""
        for _ in self.swap_in_steps(table, step=0):
            pass

    def swap_in_steps(
        self,
        table: RoutingTable,
        step: int = SWAP_STEP,
        on_swap: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """:meth:`swap`, yielding after every ``step`` deployments' worth of work (0:
        never), for a :class:`~twisted.internet.task.Cooperator` in the reactor thread.

        The new pools are built first (each follows health changes from the moment it
        exists), then the table and its pools are swapped in one statement (``on_swap``
        called right after, in the same step): a request sees the old table and pools or
        the new ones, never a mix. The watchers of the replaced pools are dropped last.
        Abandoned before the swap, the old table stays."""
        pools = pools_for(table.routes, table.config.general, self.health, self.latency)
        done = 0
        for alias, routes in table.routes.items():
            pools.build(alias, routes)
            done += len(routes)
            if step and done >= step:
                done = 0
                yield
        unlimited = unlimited_aliases(table)
        # The old pools go now, or with their last request.
        self.table, self._pools, self._unlimited = table, pools, unlimited
        self._apply(table.config.general)
        self.health.retain_only({d.id for d in table.config.deployments} | self._in_flight_ids())
        self.latency.retain_only(d.id for d in table.config.deployments)
        if on_swap is not None:
            on_swap()
        for _ in self.health.pruning_watchers(step):
            yield

    def _index(self, table: RoutingTable) -> Mapping[str, AliasPool]:
        """One pool per alias: built once per table (O(deployments)), then kept up to
        date by health changes, so that a request's picks do not walk the alias."""
        pools = pools_for(table.routes, table.config.general, self.health, self.latency)
        for alias, routes in table.routes.items():
            pools.build(alias, routes)
        return pools

    def _in_flight_ids(self) -> set[str]:
        return {k for k, h in self.health.states.items() if h.in_flight}


def unlimited_aliases(table: RoutingTable) -> frozenset[str]:
    """The aliases none of whose deployments has an rpm or tpm limit."""
    return frozenset(
        alias
        for alias, routes in table.routes.items()
        if all(r.deployment.rpm is None and r.deployment.tpm is None for r in routes)
    )
