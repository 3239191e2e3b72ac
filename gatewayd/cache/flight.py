"""One upstream call shared by identical requests in flight (:class:`Flight`).

The first request (the leader) routes; identical ones arriving while it is in flight
wait for it instead of calling upstream. A JSON answer is shared whole. A stream is
read once, recorded, and fanned out: every waiting client gets a
:class:`SharedStream` that starts at the first event, with its own flow control. A
paused (slow) client does not hold the upstream back while another is reading; it
falls behind alone, and once it is more than ``backlog`` bytes behind it is cut off
with an in-band error. The upstream is paused only when every client is paused, and
cancelled only when every client has gone.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure

from gatewayd.cache.entry import CachedAnswer, answer_headers
from gatewayd.cache.replay import complete
from gatewayd.routing import RouteResult
from gatewayd.upstream.outcomes import (
    EventStream,
    FailureKind,
    StreamSink,
    UpstreamFailure,
    openai_error,
)

#: What a waiter's Deferred fires with: its own RouteResult, or None (route alone).
Joined = RouteResult | None

#: Builds a waiter's answer from the flight's finished answer (a cache hit's shape),
#: or None when that waiter's shape cannot be served from it.
Serve = Callable[[CachedAnswer, bool], RouteResult | None]


def _copy(result: RouteResult, stream: EventStream | None, owner: bool) -> RouteResult:
    """``result`` for one waiter: its own stream; the reservations with the owner only."""
    r = result.response
    response = type(r)(r.status, r.headers, r.body, stream, r.usage, r.dialect)
    return RouteResult(
        response,
        result.alias,
        result.deployment,
        result.attempts,
        result.fallback,
        upstream_seconds=result.upstream_seconds,
        tickets=result.tickets if owner else [],
    )


class _Waiter:
    __slots__ = ("d", "owner", "stream")

    def __init__(self, d: Deferred[Joined], stream: bool) -> None:
        self.d = d
        self.stream = stream
        self.owner = False


class SharedStream(EventStream):
    """One client's view of a flight's stream: from the first event, at its own pace."""

    def __init__(self, flight: Flight) -> None:
        self.flight = flight
        self.sink: StreamSink | None = None
        self.at = 0  # index of the next block to deliver
        self.sent = 0  # bytes delivered
        self.paused = False
        self.gone = False
        self._pumping = False

    def start(self, sink: StreamSink) -> None:
        self.sink = sink
        self.pump()

    def pause(self) -> None:
        self.paused = True
        self.flight.flow()

    def resume(self) -> None:
        self.paused = False
        self.pump()
        self.flight.flow()

    def cancel(self) -> None:
        if not self.gone:
            self.gone = True
            self.flight.leave(self)

    def pump(self) -> None:
        """Deliver what the flight has that this client has not had."""
        f = self.flight
        sink = self.sink
        if sink is None or self.gone or self._pumping:
            return
        self._pumping = True
        try:
            while not self.paused and not self.gone and self.at < f.base + len(f.blocks):
                if self.at < f.base:  # trimmed before this client read it
                    self._cut("fell behind the shared stream")
                    return
                block = f.blocks[self.at - f.base]
                self.at += 1
                self.sent += len(block)
                sink.event(block)
            if f.ended and not self.gone and self.at >= f.base + len(f.blocks):
                self.gone = True
                f.subscribers.discard(self)
                sink.end(f.failure)
                return
            if self.paused and f.total - self.sent > f.backlog:
                self._cut(f"read too slowly: more than {f.backlog} bytes behind the shared stream")
        finally:
            self._pumping = False

    def _cut(self, why: str) -> None:
        self.gone = True
        self.flight.leave(self)
        assert self.sink is not None
        self.sink.end(
            UpstreamFailure(
                FailureKind.BAD_RESPONSE,
                502,
                openai_error(f"gatewayd: this client {why}", "api_error", "slow_reader"),
            )
        )


class Flight:
    """One upstream call and the requests waiting for it (see the module docstring)."""

    def __init__(
        self,
        serve: Serve,
        on_done: Callable[[Flight, CachedAnswer | None, RouteResult | None], None],
        clock_seconds: Callable[[], float],
        backlog: int,
        record_limit: int,
    ) -> None:
        self.serve = serve
        #: Called once the answer is complete (the entry to store, if storable).
        self.on_done = on_done
        self.now = clock_seconds
        self.backlog = backlog
        self.record_limit = record_limit
        self.waiters: list[_Waiter] = []
        self.route: Deferred[RouteResult] | None = None
        self.result: RouteResult | None = None
        self.upstream: EventStream | None = None
        self.subscribers: set[SharedStream] = set()
        self.blocks: list[bytes] = []
        self.base = 0  # index of blocks[0] (earlier ones trimmed)
        self.total = 0  # bytes received
        self.recording = True  # every block kept (the answer may be stored)
        self.ended = False
        self.failure: UpstreamFailure | None = None
        self._finished = False
        self._upstream_paused = False
        self.done = False  # no longer joinable
        #: The answer that carries the route's reservations (its waiter pays for it).
        self.owned: RouteResult | None = None

    # -- joining ----------------------------------------------------------------

    def lead(self, route: Deferred[RouteResult], stream: bool) -> Deferred[Joined]:
        """The leader's wait: the route it started."""
        d = self.join(stream)
        self.route = route
        route.addCallbacks(self._routed, self._failed)
        return d

    def join(self, stream: bool) -> Deferred[Joined]:
        """Fires with this waiter's RouteResult, or None: route on your own."""
        if stream and self.result is not None and self.upstream is not None:
            return self._subscribe_now()  # a live stream: from its first event
        waiter: _Waiter

        def cancel(_: Deferred[Joined]) -> None:
            if waiter in self.waiters:
                self.waiters.remove(waiter)
                self._maybe_abandon()

        waiter = _Waiter(Deferred(cancel), stream)
        self.waiters.append(waiter)
        return waiter.d

    def _subscribe_now(self) -> Deferred[Joined]:
        assert self.result is not None
        d: Deferred[Joined] = Deferred()
        d.callback(_copy(self.result, self._subscriber(), owner=False))
        return d

    def _subscriber(self) -> SharedStream:
        s = SharedStream(self)
        self.subscribers.add(s)
        return s

    # -- the leader's route -----------------------------------------------------

    def _routed(self, result: RouteResult) -> None:
        self.result = result
        response = result.response
        if response.stream is None:
            self.done = True
            entry = CachedAnswer(
                response.status,
                response.dialect,
                result.deployment,
                response.body or b"",
                None,
                response.usage,
                self.now(),
                answer_headers(response.headers),
            )
            # Stored before anyone is answered: a client's next request (to another
            # worker, through Redis) must find it.
            self.on_done(self, entry if result.fallback is None else None, result)
            waiters, self.waiters = self.waiters, []
            owner = True
            for w in waiters:
                if owner:
                    owner = False
                    self.owned = _copy(result, None, owner=True)
                    w.d.callback(self.owned)
                else:
                    w.d.callback(self.serve(entry, w.stream))
            return
        self.upstream = response.stream
        waiters, self.waiters = self.waiters, []
        owner = True
        later: list[_Waiter] = []
        for w in waiters:
            if not w.stream:
                later.append(w)  # a JSON client of a stream: the assembled answer at the end
                continue
            copy = _copy(result, self._subscriber(), owner)
            if owner:
                self.owned = copy
            owner = False
            w.d.callback(copy)
        if owner and later:  # the reservations go with some waiter that is served
            later[0].owner = True
        self.waiters = later
        if not self.subscribers and not self.waiters:
            self._abandon_upstream()
            return
        response.stream.start(self)

    def _failed(self, failure: Failure) -> None:
        """The leader's route failed: the first waiter gets the failure, the others
        route on their own (a failure is never shared: it may be the leader's own)."""
        self.done = True
        waiters, self.waiters = self.waiters, []
        if not failure.check(CancelledError) and waiters:
            waiters[0].d.errback(failure)
            waiters = waiters[1:]
        for w in waiters:
            w.d.callback(None)
        self.on_done(self, None, None)

    # -- StreamSink (the upstream) -----------------------------------------------

    def event(self, data: bytes) -> None:
        if self.ended:
            return
        self.blocks.append(data)
        self.total += len(data)
        if self.recording and self.total > self.record_limit:
            self.recording = False  # too large to store; only what readers still need is kept
            self.done = True
        for s in list(self.subscribers):
            s.pump()
        if not self.recording:
            self._trim()
        self.flow()

    def end(self, failure: UpstreamFailure | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.done = True
        self.failure = failure
        self._finish(failure)
        result = self.result
        assert result is not None
        entry = None
        if failure is None and self.recording and complete(result.response.dialect, self.blocks):
            entry = CachedAnswer(
                result.response.status,
                result.response.dialect,
                result.deployment,
                None,
                tuple(self.blocks),
                None,
                self.now(),
                answer_headers(result.response.headers),
            )
        # Stored before the readers' ends go out (see _routed).
        self.on_done(self, entry if result.fallback is None else None, result)
        for s in list(self.subscribers):
            s.pump()
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            served = None if entry is None else self.serve(entry, False)
            if served is not None and w.owner:
                served.tickets = result.tickets
                self.owned = served
            w.d.callback(served)

    # -- flow control and leaving ------------------------------------------------

    def flow(self) -> None:
        """Pause the upstream only while every reader is paused."""
        if self.upstream is None or self.ended:
            return
        hold = bool(self.subscribers) and all(s.paused for s in self.subscribers)
        if hold and not self._upstream_paused:
            self._upstream_paused = True
            self.upstream.pause()
        elif not hold and self._upstream_paused:
            self._upstream_paused = False
            self.upstream.resume()

    def leave(self, s: SharedStream) -> None:
        self.subscribers.discard(s)
        if not self.ended:
            self._maybe_abandon()
            self.flow()

    def _maybe_abandon(self) -> None:
        if self.subscribers or self.waiters or self.ended:
            return
        if self.result is None:
            if self.route is not None and not self.route.called:
                self.route.cancel()  # nobody waits: the upstream call goes
            return
        self._abandon_upstream()

    def _abandon_upstream(self) -> None:
        self.ended = True
        self.done = True
        if self.upstream is not None:
            self.upstream.cancel()
        self._finish(None)
        self.on_done(self, None, self.result)

    def _finish(self, failure: UpstreamFailure | None) -> None:
        if not self._finished and self.result is not None:
            self._finished = True
            self.result.finish(failure)

    def _trim(self) -> None:
        low = min((s.at for s in self.subscribers), default=self.base + len(self.blocks))
        drop = low - self.base
        if drop > 0:
            del self.blocks[:drop]
            self.base = low
