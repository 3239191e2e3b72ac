"""Rate limits, parallel limits and budgets, per key and per deployment, on a
:class:`~gatewayd.state.StateStore` (memory or shared Redis)."""

from gatewayd.limits.estimate import Estimate, Spent, cost, estimate
from gatewayd.limits.limiter import (
    Limiter,
    LimitExceeded,
    Refusal,
    Ticket,
    format_reset,
    store_health,
)

__all__ = [
    "Estimate",
    "LimitExceeded",
    "Limiter",
    "Refusal",
    "Spent",
    "Ticket",
    "cost",
    "estimate",
    "format_reset",
    "store_health",
]
