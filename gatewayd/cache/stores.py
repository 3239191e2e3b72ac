"""The answer store a cache stage uses, chosen by the settings in force: kept across
reloads, built again only when a reload changes where answers live (``type``, the
Redis address)."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred, succeed

from gatewayd.cache.entry import CachedAnswer
from gatewayd.cache.memory import MemoryAnswers
from gatewayd.cache.redis_store import RedisAnswers
from gatewayd.config.cache import CacheSettings
from gatewayd.config.model import GeneralSettings
from gatewayd.config.redis_address import RedisAddress
from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics

log = get_logger(__name__)

#: A lookup in Redis gives up after this long (a miss).
REDIS_TIMEOUT = 0.5


class AnswerStore(Protocol):
    def get(self, key: str) -> CachedAnswer | Deferred[CachedAnswer | None] | None: ...

    def put(self, key: str, entry: CachedAnswer, ttl: float) -> None: ...


class CacheGateway(Protocol):
    @property
    def metrics(self) -> GatewayMetrics: ...

    @property
    def clock(self) -> Any: ...


class AnswerStores:
    """Holds the one store in use (see the module docstring)."""

    def __init__(self) -> None:
        self.current: MemoryAnswers | RedisAnswers | None = None
        self._where: tuple[str, str | None] | None = None

    def get(
        self, gateway: CacheGateway, general: GeneralSettings, settings: CacheSettings
    ) -> AnswerStore | None:
        """The store for ``settings`` (None: ``coalesce_only``)."""
        if settings.coalesce_only:
            return None
        url = settings.url or general.state_store if settings.type == "redis" else None
        where = (settings.type, url)
        store = self.current
        if where != self._where:
            store = self._build(gateway, settings, url)
        elif isinstance(store, MemoryAnswers) and store.max_bytes != settings.max_bytes:
            store.resize(settings.max_bytes)
        elif isinstance(store, RedisAnswers):
            store.max_bytes = settings.max_bytes
        return store

    def close(self) -> Deferred[None]:
        """Fires with None once the Redis connection (if any) is closed."""
        store, self.current, self._where = self.current, None, None
        if isinstance(store, RedisAnswers):
            return store.close()
        return succeed(None)

    def _build(
        self, gateway: CacheGateway, settings: CacheSettings, url: str | None
    ) -> MemoryAnswers | RedisAnswers | None:
        old = self.current
        if isinstance(old, RedisAnswers):
            old.close()
        metrics = gateway.metrics
        store: MemoryAnswers | RedisAnswers | None
        if settings.type == "redis":
            if url is None:  # the config refuses this; a state store removed by reload
                log.warn("cache type redis without a url or a state_store: not caching")
                store = None
            else:
                from gatewayd.state.redis import RedisStore  # txredisapi only when used

                address = RedisAddress.parse(url)
                store = RedisAnswers(
                    RedisStore(address, gateway.clock, REDIS_TIMEOUT), settings.max_bytes
                )
                log.info("response cache in Redis at {addr}", addr=repr(address))
            metrics.cache_bytes.collect = lambda: ()
        else:
            memory = MemoryAnswers(
                gateway.clock, settings.max_bytes, lambda n: metrics.cache_evictions.inc(amount=n)
            )
            metrics.cache_bytes.collect = lambda: [((), float(memory.bytes))]
            store = memory
        self._where = (settings.type, url)
        self.current = store
        return store
