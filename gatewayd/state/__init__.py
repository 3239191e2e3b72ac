"""Shared state: counters, leases and values behind one interface.

:class:`MemoryStore` for one instance; :class:`RedisStore` (wrapped in a
:class:`FailoverStore`) shared by every instance pointing at one Redis.
"""

from gatewayd.state.base import (
    LeaseTake,
    StateStore,
    StoreUnavailable,
    Take,
    TakeResult,
    Usage,
    WindowTake,
)
from gatewayd.state.failover import FailoverStore
from gatewayd.state.memory import MemoryStore

__all__ = [
    "FailoverStore",
    "LeaseTake",
    "MemoryStore",
    "StateStore",
    "StoreUnavailable",
    "Take",
    "TakeResult",
    "Usage",
    "WindowTake",
]
