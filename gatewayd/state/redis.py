"""The Redis :class:`StateStore`, on the Twisted-native client ``txredisapi``.

Counters are updated by Lua scripts (EVALSHA, falling back to EVAL when the server
does not know the script yet, e.g. after a restart), so every take is atomic across
instances. Every call has a short timeout; while no connection is up a call fails at
once with :class:`StoreUnavailable` (txredisapi reconnects in the background).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Sequence
from typing import Any

import txredisapi
from twisted.internet.defer import Deferred, TimeoutError, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from gatewayd.config.redis_address import RedisAddress
from gatewayd.observability.log import get_logger
from gatewayd.sockets.writethrough import write_through
from gatewayd.state import scripts
from gatewayd.state.base import (
    LeaseTake,
    StoreUnavailable,
    Take,
    TakeResult,
    Usage,
    WindowTake,
)

log = get_logger(__name__)

PREFIX = "gatewayd:"
#: Seconds between tries to give back slots whose release could not reach Redis.
ORPHAN_RETRY = 1.0
#: At most this many slots waiting to be given back (each expires by itself anyway).
MAX_ORPHANS = 10_000


class _NotSent(StoreUnavailable):
    """The command never left this process (no connection): nothing to undo."""


def _no_delay(add: Any) -> Any:
    """Commands are small and pipelined: without TCP_NODELAY, Nagle holds each one back
    until the previous reply's ACK (milliseconds per request)."""

    def add_connection(conn: Any) -> Any:
        transport = getattr(conn, "transport", None)
        if transport is not None and hasattr(transport, "setTcpNoDelay"):
            transport.setTcpNoDelay(True)
        return add(conn)

    return add_connection


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def _n(now: float) -> str:
    return f"{now:.3f}"


class RedisStore:
    """Shared counters and values in one Redis."""

    def __init__(
        self,
        address: RedisAddress,
        clock: IReactorTime,
        timeout: float = 0.5,
        connection: Any = None,
    ) -> None:
        self.address = address
        self.clock = clock
        self.timeout = timeout
        self._redis = connection or txredisapi.lazyConnection(
            address.host,
            address.port,
            dbid=address.db,
            password=address.password,
            reconnect=True,
            charset="utf-8",
            convertNumbers=False,
            connectTimeout=max(1.0, timeout),
            # A server that stops answering drops the connection; reconnect takes over.
            replyTimeout=max(2.0, timeout * 4),
        )
        self._gave_up = False
        #: Leases to give back: (full key, lease id) -> when the lease expires anyway.
        self._orphans: dict[tuple[str, str], float] = {}
        #: Takes whose answer was lost, to undo: take id -> when its memo expires.
        self._lost_takes: dict[str, float] = {}
        self._orphan_timer: Any = None
        factory = getattr(self._redis, "_factory", None)
        if factory is not None:
            # Commands leave at once, as the client's answers do (gatewayd.sockets.writethrough):
            # a slot given back before an answer reaches Redis before the client's next
            # request can take it again.
            factory.protocol = _SendNowProtocol
            factory.maxDelay = 2.0  # resume sharing soon after Redis is back
            factory.initialDelay = 0.2
            factory.addConnection = _no_delay(factory.addConnection)

    @property
    def connected(self) -> bool:
        factory = getattr(self._redis, "_factory", None)
        return factory is None or bool(factory.size)

    def _call(self, method: str, *args: Any) -> Deferred[Any]:
        if not self.connected:
            first = getattr(self._redis, "_connected", None)
            if not self._gave_up and isinstance(first, Deferred) and not first.called:
                return self._after_first_connection(first, method, args)
            return fail(_NotSent(f"not connected to {self.address!r}"))
        try:
            d: Deferred[Any] = getattr(self._redis, method)(*args)
        except Exception as e:  # txredisapi raises ConnectionError synchronously
            return fail(_NotSent(f"{self.address!r}: {e}"))
        d.addTimeout(self.timeout, self.clock)

        def unavailable(f: Failure) -> Failure:
            if f.check(TimeoutError):
                raise StoreUnavailable(f"{self.address!r} did not answer within {self.timeout} s")
            if f.check(txredisapi.ConnectionError):
                raise StoreUnavailable(f"{self.address!r}: {f.value}")
            return f

        d.addErrback(unavailable)
        return d

    def _after_first_connection(
        self, first: Deferred[Any], method: str, args: tuple[Any, ...]
    ) -> Deferred[Any]:
        """Right after start the connection is still being made: wait for it (within the
        timeout) rather than call that an outage. Once it timed out, calls fail fast."""
        gate: Deferred[None] = Deferred()

        def connected(result: Any) -> Any:
            if not gate.called:
                gate.callback(None)
            return result

        first.addBoth(connected)
        gate.addTimeout(self.timeout, self.clock)

        def go(_: None) -> Deferred[Any]:
            return self._call(method, *args)

        def gave_up(f: Failure) -> Failure:
            if f.check(TimeoutError):
                self._gave_up = True
                raise _NotSent(f"cannot connect to {self.address!r}")
            return f

        gate.addCallbacks(go, gave_up)
        return gate

    def _script(self, script: str, keys: list[str], args: list[str]) -> Deferred[Any]:
        d = self._call("evalsha", _sha(script), keys, args)

        def load(f: Failure) -> Any:
            f.trap(txredisapi.ScriptDoesNotExist)
            return self._call("eval", script, keys, args)

        d.addErrback(load)
        return d

    # -- counters --------------------------------------------------------------

    def _run(self, takes: Sequence[Take], mode: str) -> Deferred[tuple[bool, int, list[Usage]]]:
        now = self.clock.seconds()
        keys = [PREFIX + t.key for t in takes]
        args = [_n(now), mode]
        for t in takes:
            if isinstance(t, WindowTake):
                limit = "" if t.limit is None else repr(float(t.limit))
                args += ["w", limit, repr(float(t.amount)), repr(float(t.window))]
            else:
                args += ["l", str(t.limit), t.lease, repr(float(t.ttl))]

        def parse(reply: list[Any]) -> tuple[bool, int, list[Usage]]:
            ok, refused = int(reply[0]), int(reply[1])
            usage = []
            for i, t in enumerate(takes):
                used, reset, start = (float(x) for x in reply[2 + 3 * i : 5 + 3 * i])
                limit = None if t.limit is None else float(t.limit)
                usage.append(Usage(t.key, used, limit, reset, start))
            return ok == 1, refused - 1, usage

        return self._script(scripts.TAKE, keys, args).addCallback(parse)

    def take(self, takes: Sequence[Take]) -> Deferred[TakeResult]:
        def result(r: tuple[bool, int, list[Usage]]) -> TakeResult:
            ok, refused, usage = r
            return TakeResult(ok, tuple(usage), None if ok else refused)

        if any(isinstance(t, LeaseTake) and not t.abandon for t in takes):
            return self._run(takes, "take").addCallback(result)
        tid = uuid.uuid4().hex
        d = self._run(takes, f"take:{tid}").addCallback(result)

        def lost(f: Failure) -> Failure:
            # Timed out or cancelled: the server may still run the take (a hung Redis
            # runs it when it wakes up), and nobody would settle its reservation or
            # release its slot (an hour for a parallel slot, a whole budget period
            # for tokens and USD): undo it once Redis answers.
            if not f.check(_NotSent):
                self._undo_take(tid)
            return f

        d.addErrback(lost)
        return d

    def peek(self, takes: Sequence[Take]) -> Deferred[tuple[Usage, ...]]:
        return self._run(takes, "peek").addCallback(lambda r: tuple(r[2]))

    def settle(self, key: str, start: float, delta: float) -> Deferred[None]:
        d = self._script(scripts.SETTLE, [PREFIX + key], [_n(start), repr(float(delta))])
        return d.addCallback(lambda _: None)

    def settle_many(
        self, windows: Sequence[tuple[str, float, float]], leases: Sequence[tuple[str, str]]
    ) -> Deferred[None]:
        keys = [PREFIX + k for k, _, _ in windows] + [PREFIX + k for k, _ in leases]
        args = [str(len(windows))]
        for _, start, delta in windows:
            args += [_n(start), repr(float(delta))]
        args += [lease for _, lease in leases]
        d = self._script(scripts.SETTLE_MANY, keys, args).addCallback(lambda _: None)
        if leases:
            self._retry_release_on_failure(d, leases)
        return d

    def release(self, key: str, lease: str) -> Deferred[None]:
        d = self._call("zrem", PREFIX + key, lease).addCallback(lambda _: None)
        self._retry_release_on_failure(d, [(key, lease)])
        return d

    # -- slots that must be given back -------------------------------------------

    def _retry_release_on_failure(
        self, d: Deferred[None], leases: Sequence[tuple[str, str]]
    ) -> None:
        """A release that did not reach Redis would hold its slot until the lease
        expires (an hour for a key's parallel slot): keep trying."""

        def lost(f: Failure) -> Failure:
            self._give_back([(PREFIX + k, lease, None) for k, lease in leases])
            return f

        d.addErrback(lost)

    def _give_back(self, leases: Sequence[tuple[str, str, float | None]]) -> None:
        """Free these leases (and refuse their late takes) as soon as Redis answers;
        retried every :data:`ORPHAN_RETRY` s until done or the lease has expired."""
        now = self.clock.seconds()
        for key, lease, ttl in leases:
            if len(self._orphans) >= MAX_ORPHANS:
                log.warn("state store: too many slots to give back; the rest expire by themselves")
                break
            # Unknown ttl (a release): the longest a lease lives.
            self._orphans[(key, lease)] = now + (ttl if ttl is not None else 3600.0)
        self._schedule_give_back(0.0)

    def _undo_take(self, tid: str) -> None:
        if len(self._lost_takes) < MAX_ORPHANS:
            self._lost_takes[tid] = self.clock.seconds() + scripts.TAKE_MEMO_MS / 1000
        self._schedule_give_back(0.0)

    def _schedule_give_back(self, delay: float) -> None:
        if self._orphan_timer is None or not self._orphan_timer.active():
            self._orphan_timer = self.clock.callLater(delay, self._flush_orphans)

    def _flush_orphans(self) -> None:
        now = self.clock.seconds()
        for t in [t for t, until in self._lost_takes.items() if until <= now]:
            del self._lost_takes[t]  # its memo expired on the server too
        if self._lost_takes:
            tids = list(self._lost_takes)

            def undone(_: Any) -> None:
                for t in tids:
                    self._lost_takes.pop(t, None)

            def retry(f: Failure) -> None:
                log.debug("state store: undoing lost takes: {err}", err=f.getErrorMessage())
                self._schedule_give_back(ORPHAN_RETRY)

            undo_args = [*tids, str(scripts.TAKE_MEMO_MS)]
            self._script(scripts.UNDO_TAKE, [], undo_args).addCallbacks(undone, retry)
        for k in [k for k, until in self._orphans.items() if until <= now]:
            del self._orphans[k]  # expired on the server too
        items = list(self._orphans.items())
        if not items:
            return
        keys = [key for (key, _), _ in items]
        args: list[str] = []
        for (_, lease), until in items:
            args += [lease, str(max(1, math.ceil((until - now) * 1000)))]

        def done(_: Any) -> None:
            for k, until in items:
                if self._orphans.get(k) == until:
                    del self._orphans[k]

        def again(f: Failure) -> None:
            log.debug("state store: giving back slots: {err}", err=f.getErrorMessage())
            self._schedule_give_back(ORPHAN_RETRY)

        self._script(scripts.ABANDON, keys, args).addCallbacks(done, again)

    def members(self, key: str) -> Deferred[dict[str, float]]:
        now = _n(self.clock.seconds())

        def parse(flat: list[Any]) -> dict[str, float]:
            return {str(flat[i]): float(flat[i + 1]) for i in range(0, len(flat), 2)}

        return self._script(scripts.MEMBERS, [PREFIX + key], [now]).addCallback(parse)

    # -- values ----------------------------------------------------------------

    def get(self, key: str) -> Deferred[str | None]:
        return self._call("get", PREFIX + key)

    def set(self, key: str, value: str, ttl: float) -> Deferred[None]:
        ms = max(1, int(ttl * 1000))
        return self._call("set", PREFIX + key, value, None, ms).addCallback(lambda _: None)

    def delete(self, key: str) -> Deferred[None]:
        return self._call("delete", PREFIX + key).addCallback(lambda _: None)

    def close(self) -> Deferred[None]:
        if self._orphan_timer is not None and self._orphan_timer.active():
            self._orphan_timer.cancel()
        d: Deferred[Any] = self._redis.disconnect()
        return d.addBoth(lambda _: None)


class _SendNow:
    """A transport whose ``write`` sends at once when nothing is queued; all else is the
    transport's own."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        write_through(self._transport, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _SendNowProtocol(txredisapi.RedisProtocol):  # type: ignore[misc]
    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(_SendNow(transport))


__all__ = ["RedisAddress", "RedisStore"]
