"""The shared answer store in Redis: every instance and worker on the same Redis
sees the same answers. A Redis that is down or slow is a miss (and a skipped write),
never an error for the client."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from gatewayd.cache.entry import CachedAnswer
from gatewayd.observability.log import get_logger

log = get_logger(__name__)

#: Below the state store's own ``gatewayd:`` prefix.
PREFIX = "cache:"


class TextStore(Protocol):
    """A string store with expiry (:class:`gatewayd.state.redis.RedisStore`)."""

    def get(self, key: str) -> Deferred[str | None]: ...

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]: ...

    def close(self) -> Deferred[None]: ...


class RedisAnswers:
    """Entries as JSON text under ``gatewayd:cache:KEY``, expiring with their ttl."""

    def __init__(self, store: TextStore, max_bytes: int) -> None:
        self.store = store
        #: An entry larger than this is not written (one answer must not fill Redis).
        self.max_bytes = max_bytes
        self._down = False

    def get(self, key: str) -> Deferred[CachedAnswer | None]:
        """Fires with the entry, or None: absent, unreadable, or Redis unavailable."""
        d = self.store.get(PREFIX + key)
        d.addCallbacks(self._read, self._failed)
        return d  # type: ignore[return-value]

    def put(self, key: str, entry: CachedAnswer, ttl: float) -> None:
        if entry.size > self.max_bytes:
            return
        self.store.set(PREFIX + key, entry.dumps(), ttl).addCallbacks(self._wrote, self._failed)

    def close(self) -> Deferred[None]:
        return self.store.close()

    def _read(self, text: str | None) -> CachedAnswer | None:
        self._up()
        return None if text is None else CachedAnswer.loads(text)

    def _wrote(self, _: Any) -> None:
        self._up()

    def _up(self) -> None:
        if self._down:
            self._down = False
            log.info("the cache's Redis answers again")

    def _failed(self, failure: Failure) -> Failure | None:
        # Any failure (unavailable, timeout, a protocol error) is a miss: logged once
        # per outage, not per request. A lookup cancelled (its client went) is no outage.
        if failure.check(CancelledError):
            return failure
        if not self._down:
            self._down = True
            log.warn(
                "the cache's Redis is unavailable, answering without it: {err}",
                err=str(failure.value),
            )
        return None
