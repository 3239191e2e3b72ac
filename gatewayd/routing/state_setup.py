"""Builds the state store a service runs on, from ``general_settings``: local memory,
or Redis (``state_store``) with its failure policy and shared cooldowns."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from gatewayd.config.model import GeneralSettings
from gatewayd.config.redis_address import RedisAddress
from gatewayd.limits.limiter import Limiter
from gatewayd.limits.usagelog import UsageLog
from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.routing import Router
from gatewayd.routing.shared_cooldowns import SharedCooldowns
from gatewayd.state import FailoverStore, MemoryStore, StateStore

log = get_logger(__name__)


class StateSetup:
    """The store, the limiter on it, and (with Redis) the shared cooldowns."""

    def __init__(
        self,
        limiter: Limiter,
        store: StateStore,
        url: str | None,
        cooldowns: SharedCooldowns | None = None,
    ) -> None:
        self.limiter = limiter
        self.store = store
        self.url = url
        self.cooldowns = cooldowns
        self.usage_log: UsageLog | None = None
        self._usage_settings: tuple[str | None, int, int] = (None, 0, 0)

    def open_usage_log(self, general: GeneralSettings) -> None:
        """Open (or, when its settings changed on reload, reopen) the usage log."""
        wanted = (general.usage_log, general.usage_log_max_bytes, general.usage_log_backups)
        if wanted == self._usage_settings:
            return
        if self.usage_log is not None:
            self.usage_log.close()
            self.usage_log = None
        self._usage_settings = wanted
        if general.usage_log is not None:
            try:
                self.usage_log = UsageLog(*wanted)  # type: ignore[arg-type]
            except OSError as e:
                log.error("cannot open usage_log {path}: {err}", path=general.usage_log, err=e)

    def start(self) -> None:
        if self.cooldowns is not None:
            self.cooldowns.start()

    def reloaded(self, general: GeneralSettings) -> None:
        """Counters survive a reload (they are keyed by key name and deployment id); the
        store itself is chosen at start only."""
        if general.state_store != self.url:
            log.warn("state_store changed in the config: it takes effect on restart only")
        if isinstance(self.store, FailoverStore):
            self.store.failure_mode = general.state_store_failure
        self.open_usage_log(general)

    def stop(self) -> Deferred[None]:
        if self.cooldowns is not None:
            self.cooldowns.stop()
        if self.usage_log is not None:
            self.usage_log.close()
            self.usage_log = None
        return self.store.close() if isinstance(self.store, FailoverStore) else succeed(None)


def build_limiter(
    general: GeneralSettings, reactor: Any, metrics: GatewayMetrics, router: Router
) -> StateSetup:
    setup = _build(general, reactor, metrics, router)
    setup.open_usage_log(general)
    return setup


def _build(
    general: GeneralSettings, reactor: Any, metrics: GatewayMetrics, router: Router
) -> StateSetup:
    local = MemoryStore(reactor)
    url = general.state_store
    if url is None:
        limiter = Limiter(local, reactor)
        router.limiter = limiter
        metrics.state_store_up.collect = lambda: [((), 1.0)]
        return StateSetup(limiter, local, None)
    from gatewayd.state.redis import RedisStore  # txredisapi only when Redis is used

    address = RedisAddress.parse(url)
    store = FailoverStore(
        RedisStore(address, reactor),
        local,
        reactor,
        general.state_store_failure,
        repr(address),
        on_outage=lambda: metrics.state_store_outages.inc(),
    )
    metrics.state_store_up.collect = lambda: [((), 1.0 if store.up else 0.0)]
    limiter = Limiter(store, reactor)
    router.limiter = limiter
    cooldowns = SharedCooldowns(
        store,
        router.health,
        reactor,
        lambda: {d.id for d in router.table.config.deployments},
    )
    router.on_cooldown = cooldowns.publish
    log.info(
        "state store {addr} (state_store_failure: {mode})",
        addr=repr(address),
        mode=general.state_store_failure,
    )
    return StateSetup(limiter, store, url, cooldowns)
