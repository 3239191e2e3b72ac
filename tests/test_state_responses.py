"""The Responses store on the shared state store: shared while it answers, the bounded
local copy while it does not."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from gatewayd.dialects.shared_store import SharedResponseStore
from gatewayd.dialects.store import MemoryResponseStore
from gatewayd.state import StoreUnavailable
from gatewayd.state.memory import MemoryStore


def result(d: Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the Deferred did not fire"
    return out[0]


class Down(MemoryStore):
    """A shared store that does not answer (Redis down)."""

    def get(self, key: str) -> Deferred[str | None]:
        return fail(StoreUnavailable("down"))

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        return fail(StoreUnavailable("down"))

    def delete(self, key: str) -> Deferred[None]:
        return fail(StoreUnavailable("down"))


def test_two_instances_share_responses_and_their_deletion() -> None:
    clock = Clock()
    shared = MemoryStore(clock)
    a = SharedResponseStore(shared, MemoryResponseStore(clock, 1 << 20))
    b = SharedResponseStore(shared, MemoryResponseStore(clock, 1 << 20))
    result(a.put("resp_1", b'{"x": 1}', 60))
    assert result(b.get("resp_1")) == b'{"x": 1}'
    assert result(b.delete("resp_1")) is True
    assert result(a.get("resp_1")) is None  # a's local copy does not outlive the delete
    assert result(b.delete("resp_1")) is False


def test_the_ttl_holds_in_the_shared_store() -> None:
    clock = Clock()
    store = SharedResponseStore(MemoryStore(clock), MemoryResponseStore(clock, 1 << 20))
    result(store.put("resp_1", b"{}", 10))
    clock.advance(11)
    assert result(store.get("resp_1")) is None


def test_while_the_shared_store_is_down_the_local_copy_answers() -> None:
    clock = Clock()
    store = SharedResponseStore(Down(clock), MemoryResponseStore(clock, 1 << 20))
    assert result(store.put("resp_1", b'{"x": 1}', 60)) is None  # no failure for the caller
    assert result(store.get("resp_1")) == b'{"x": 1}'
    assert result(store.get("resp_2")) is None
    assert result(store.delete("resp_1")) is True


def test_a_value_over_the_local_bound_is_not_kept_anywhere() -> None:
    clock = Clock()
    shared = MemoryStore(clock)
    store = SharedResponseStore(shared, MemoryResponseStore(clock, 8))
    result(store.put("resp_1", b"0123456789", 60))
    assert result(store.get("resp_1")) is None
    store.max_bytes = 64  # a reload raising the bound reaches the local store
    assert store.local.max_bytes == 64
