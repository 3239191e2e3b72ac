"""The Responses store on the shared state store, so that a ``previous_response_id``
minted by one gateway instance (or worker) works on every other.

Each response is written to the shared store and kept in the bounded local
:class:`~gatewayd.dialects.store.MemoryResponseStore` as well: a read that the shared
store cannot answer (Redis down) is served locally, so losing Redis costs no follow-up
that this instance answered itself. While Redis answers, it alone decides (a response
deleted through one instance is gone for all).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from gatewayd.dialects.store import MemoryResponseStore
from gatewayd.observability.log import get_logger
from gatewayd.state.base import StateStore

log = get_logger(__name__)

#: Key prefix of stored responses in the shared store.
PREFIX = "responses:"


class SharedResponseStore:
    """A :class:`~gatewayd.dialects.store.ResponseStore` over a :class:`StateStore`."""

    def __init__(self, shared: StateStore, local: MemoryResponseStore) -> None:
        self.shared = shared
        self.local = local

    @property
    def max_bytes(self) -> int:
        return self.local.max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self.local.max_bytes = value

    def get(self, key: str) -> Deferred[bytes | None]:
        """Fires with the value from the shared store; the local copy only when the
        shared store does not answer (another instance may have deleted it)."""
        d = self.shared.get(PREFIX + key)

        def found(value: str | None) -> bytes | None:
            return None if value is None else value.encode("utf-8")

        def unavailable(f: Failure) -> Deferred[bytes | None]:
            log.debug("responses store: shared read failed: {err}", err=f.getErrorMessage())
            return self.local.get(key)

        return d.addCallbacks(found, unavailable)

    def put(self, key: str, value: bytes, ttl: float) -> Deferred[None]:
        """Fires once stored locally and (if it answers) in the shared store."""
        self.local.put(key, value, ttl)
        if ttl <= 0 or len(value) > self.local.max_bytes:
            return succeed(None)
        d = self.shared.set(PREFIX + key, value.decode("utf-8"), ttl)
        return d.addErrback(self._lost)

    def delete(self, key: str) -> Deferred[bool]:
        """Fires with True when either copy existed."""
        local = self.local.delete(key)
        d = self.get(key)

        def drop(value: bytes | None) -> Deferred[bool]:
            gone = self.shared.delete(PREFIX + key).addErrback(self._lost)
            return gone.addCallback(lambda _: value is not None).addCallback(
                lambda shared: local.addCallback(lambda here: bool(here or shared))
            )

        return d.addCallback(drop)

    def _lost(self, f: Failure) -> None:
        log.debug("responses store: shared write failed: {err}", err=f.getErrorMessage())
