"""Limits on top of the state store: what one request takes, and gives back.

* per key: ``rpm``, ``tpm``, ``max_parallel_requests`` and a ``budget`` (tokens and/or
  USD per period), plus spend counters per period for ``/key/info``;
* per deployment: ``rpm`` and ``tpm``.

A request reserves before it is sent (one request, its estimated tokens and cost), in
one atomic take per scope, and settles with the real usage once it is answered: the
reservation is corrected in the window it was made in. Concurrent requests can go past
a limit by at most one reservation (a take is admitted while use is below the limit).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from gatewayd.config.keys import ClientKey
from gatewayd.config.model import Deployment
from gatewayd.limits.estimate import Estimate, Spent
from gatewayd.observability.log import get_logger
from gatewayd.state.base import LeaseTake, StateStore, Take, TakeResult, Usage, WindowTake

log = get_logger(__name__)

MINUTE = 60.0
#: Spend is counted per this period when a key has no budget.
DEFAULT_PERIOD = 30 * 86400.0
#: A parallel slot frees itself after this long if never released (an instance died).
LEASE_TTL = 3600.0


def format_reset(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    s = math.ceil(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


@dataclass(frozen=True)
class Refusal:
    """Why a request may not go now, and when it may."""

    #: ``requests``, ``tokens``, ``parallel_requests``, ``budget_tokens``, ``budget_usd``
    what: str
    #: ``key`` or ``deployment``
    scope: str
    #: The key's name or the deployment's id.
    name: str
    limit: float
    retry_after: float
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def budget(self) -> bool:
        return self.what.startswith("budget")

    def message(self) -> str:
        if self.budget:
            unit = "USD" if self.what == "budget_usd" else "tokens"
            return (
                f"budget exceeded for key {self.name!r}: {self.limit:g} {unit} per period; "
                f"it renews in {format_reset(self.retry_after)}"
            )
        per = "" if self.what == "parallel_requests" else " per minute"
        return (
            f"rate limit reached for {self.scope} {self.name!r}: "
            f"{self.limit:g} {self.what.replace('_', ' ')}{per}; "
            f"retry in {format_reset(self.retry_after)}"
        )


class LimitExceeded(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message())
        self.refusal = refusal


def _headers(usage: Sequence[tuple[str, Usage]], now: float) -> tuple[tuple[bytes, bytes], ...]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for the minute windows."""
    out = []
    for what, u in usage:
        if u.limit is None:
            continue
        remaining = max(0, math.floor(u.limit - u.used))
        out += [
            (f"x-ratelimit-limit-{what}".encode(), b"%d" % u.limit),
            (f"x-ratelimit-remaining-{what}".encode(), b"%d" % remaining),
            (f"x-ratelimit-reset-{what}".encode(), format_reset(u.reset_at - now).encode()),
        ]
    return tuple(out)


@dataclass
class _Planned:
    takes: list[Take] = field(default_factory=list)
    #: For each take: what it limits (requests, tokens, parallel_requests, budget_*, spend_*).
    what: list[str] = field(default_factory=list)

    def add(self, what: str, take: Take) -> None:
        self.takes.append(take)
        self.what.append(what)


class Ticket:
    """What one admission took. :meth:`settle` once with the real usage (or None when
    no upstream answered); idempotent, and frees the parallel slot."""

    def __init__(
        self,
        store: StateStore,
        plan: _Planned,
        result: TakeResult,
        estimate: Estimate,
        reserved_usd: float,
        headers: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        self.store = result.backend or store
        self.plan = plan
        self.usage = result.usage
        self.estimate = estimate
        self.reserved_usd = reserved_usd
        self.headers = headers
        self.settled = False

    def settle(self, spent: Spent | None, usd: float = 0.0, served: bool = True) -> None:
        if self.settled:
            return
        self.settled = True
        tokens = 0 if spent is None else spent.total
        windows: list[tuple[str, float, float]] = []
        leases: list[tuple[str, str]] = []
        for what, take, u in zip(self.plan.what, self.plan.takes, self.usage, strict=True):
            if isinstance(take, LeaseTake):
                leases.append((take.key, take.lease))
                continue
            if what in ("tokens", "budget_tokens", "spend_tokens"):
                delta = tokens - take.amount
            elif what in ("budget_usd", "spend_usd"):
                delta = usd - take.amount
            elif what == "requests" and not served:
                delta = -1.0  # refused by every deployment: not a request the key made
            else:
                continue
            if delta:
                windows.append((take.key, u.start, delta))
        if windows or leases:  # one round trip for all of them
            self._quiet(self.store.settle_many(windows, leases))

    def _quiet(self, d: Deferred[None]) -> None:
        # A settle that cannot reach the store is lost, never a client error.
        def lost(f: Failure) -> None:
            log.debug("state store: settle lost: {err}", err=f.getErrorMessage())

        d.addErrback(lost)


class Limiter:
    """Admits requests against key and deployment limits kept in ``store``."""

    def __init__(self, store: StateStore, clock: IReactorTime) -> None:
        self.store = store
        self.clock = clock

    # -- plans -----------------------------------------------------------------

    def _key_plan(
        self, key: ClientKey, est: Estimate, usd: float, lease: str, tokens: bool = True
    ) -> _Planned:
        k = f"key:{key.name}"
        p = _Planned()
        if key.rpm is not None:
            p.add("requests", WindowTake(f"{k}:rpm", key.rpm, 1, MINUTE))
        if key.tpm is not None and tokens:
            p.add("tokens", WindowTake(f"{k}:tpm", key.tpm, est.total, MINUTE))
        if key.max_parallel_requests is not None:
            p.add(
                "parallel_requests",
                LeaseTake(f"{k}:par", key.max_parallel_requests, lease, LEASE_TTL),
            )
        if not tokens:  # an answer that costs nothing: neither tokens nor budget
            return p
        b = key.budget
        period = b.period if b else DEFAULT_PERIOD
        tokens_limit = b.tokens if b else None
        usd_limit = b.usd if b else None
        p.add(
            "budget_tokens" if tokens_limit is not None else "spend_tokens",
            WindowTake(f"{k}:spend:tokens:{period:g}", tokens_limit, est.total, period),
        )
        p.add(
            "budget_usd" if usd_limit is not None else "spend_usd",
            WindowTake(f"{k}:spend:usd:{period:g}", usd_limit, usd, period),
        )
        return p

    def _deployment_plan(self, d: Deployment, est: Estimate) -> _Planned:
        p = _Planned()
        if d.rpm is not None:
            p.add("requests", WindowTake(f"dep:{d.id}:rpm", d.rpm, 1, MINUTE))
        if d.tpm is not None:
            p.add("tokens", WindowTake(f"dep:{d.id}:tpm", d.tpm, est.total, MINUTE))
        return p

    # -- admission -------------------------------------------------------------

    def _admit(
        self, plan: _Planned, scope: str, name: str, est: Estimate, usd: float
    ) -> Deferred[Ticket]:
        def decide(r: TakeResult) -> Ticket:
            now = self.clock.seconds()
            minute = [
                (w, u)
                for w, u in zip(plan.what, r.usage, strict=True)
                if w in ("requests", "tokens")
            ]
            headers = _headers(minute, now)
            if r.ok:
                return Ticket(self.store, plan, r, est, usd, headers)
            assert r.refused is not None
            u = r.usage[r.refused]
            what = plan.what[r.refused]
            wait = 1.0 if what == "parallel_requests" else max(0.0, u.reset_at - now)
            raise LimitExceeded(Refusal(what, scope, name, u.limit or 0.0, wait, headers))

        return self.store.take(plan.takes).addCallback(decide)

    def admit_key(
        self, key: ClientKey, est: Estimate, usd: float = 0.0, tokens: bool = True
    ) -> Deferred[Ticket]:
        """Fires with a :class:`Ticket`, or fails with :class:`LimitExceeded` (or
        :class:`~gatewayd.state.StoreUnavailable` when the store is down and closed).
        ``tokens`` False (a cached answer): only the requests and parallel limits."""
        plan = self._key_plan(key, est, usd, uuid.uuid4().hex, tokens)
        return self._admit(plan, "key", key.name, est, usd)

    def admit_deployment(self, d: Deployment, est: Estimate) -> Deferred[Ticket | None]:
        """Like :meth:`admit_key`; fires with None at once when the deployment has no
        limits (no store call on that path)."""
        plan = self._deployment_plan(d, est)
        if not plan.takes:
            return succeed(None)
        d2: Deferred[Any] = self._admit(plan, "deployment", d.id, est, 0.0)
        return d2

    # -- reporting -------------------------------------------------------------

    def key_info(self, key: ClientKey) -> Deferred[dict[str, Any]]:
        """Fires with the key's limits, what is left of them, and spend this period."""
        plan = self._key_plan(key, Estimate(0, 0), 0.0, "-")

        def describe(usage: tuple[Usage, ...]) -> dict[str, Any]:
            now = self.clock.seconds()
            by = dict(zip(plan.what, usage, strict=True))
            out: dict[str, Any] = {}

            def limit(what: str, value: int | float | None) -> dict[str, Any] | None:
                if value is None:
                    return None
                u = by[what]
                entry: dict[str, Any] = {"limit": value, "remaining": u.remaining}
                if what != "parallel_requests":
                    entry["resets_in_s"] = round(max(0.0, u.reset_at - now), 3) if u.used else None
                else:
                    entry["in_use"] = int(u.used)
                return entry

            out["rpm"] = limit("requests", key.rpm)
            out["tpm"] = limit("tokens", key.tpm)
            out["max_parallel_requests"] = limit("parallel_requests", key.max_parallel_requests)
            tokens = by.get("budget_tokens") or by["spend_tokens"]
            usd = by.get("budget_usd") or by["spend_usd"]
            b = key.budget
            out["budget"] = (
                None
                if b is None
                else {
                    "tokens": b.tokens,
                    "usd": b.usd,
                    "period": b.period_text,
                    "remaining_tokens": tokens.remaining,
                    "remaining_usd": usd.remaining,
                }
            )
            out["spend"] = {
                "tokens": int(tokens.used),
                "usd": round(usd.used, 10),
                "period": b.period_text if b else "30d",
                "period_resets_in_s": round(max(0.0, tokens.reset_at - now), 3)
                if tokens.used or usd.used
                else None,
            }
            return out

        return self.store.peek(plan.takes).addCallback(describe)


def store_health(limiter: Limiter) -> dict[str, Any]:
    """For ``/health``: where the counters live and whether it answers (no secrets)."""
    health = getattr(limiter.store, "health", None)
    if callable(health):
        out: dict[str, Any] = health()
        return out
    return {"backend": "memory", "status": "ok"}
