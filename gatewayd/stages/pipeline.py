"""Runs the stages around one routed request (see :mod:`gatewayd.stages.base`).

Synchronous until a stage's ``before`` returns a Deferred: the common request (no key
limits to wait for, no cache) costs a loop and a callback, no extra Deferred."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from gatewayd.observability.log import get_logger
from gatewayd.routing import RouteResult
from gatewayd.stages.base import Route, RouteContext, Stage
from gatewayd.upstream.outcomes import UpstreamFailure

log = get_logger(__name__)


class Pipeline:
    """The stages in order; :meth:`run` puts them around a route."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)

    def run(self, ctx: RouteContext, route: Route, i: int = 0) -> Deferred[RouteResult]:
        """``route`` behind the stages (from the ``i``-th on): fires with the
        :class:`RouteResult` (routed, or a stage's early answer) or fails
        (:class:`~gatewayd.routing.RouteError`, or what a stage raised). Cancelling it
        cancels what is pending: a stage's wait or the route."""
        stages = self.stages
        n = len(stages)
        ctx.route = route
        while i < n:
            try:
                early = stages[i].before(ctx)
            except Exception:
                failure = Failure()
                self._after(ctx, i, None, failure)
                return fail(failure)
            if early is None:
                i += 1
                continue
            if isinstance(early, Deferred):
                return self._waiting(ctx, route, i, early)
            self._complete(early, ctx, i + 1)
            return succeed(early)
        d = route(ctx)
        d.addBoth(self._complete, ctx, n)
        return d

    def _waiting(
        self, ctx: RouteContext, route: Route, i: int, pending: Deferred[RouteResult | None]
    ) -> Deferred[RouteResult]:
        inner: list[Deferred[RouteResult]] = []

        def cancel(_: Deferred[RouteResult]) -> None:
            (inner[0] if inner else pending).cancel()

        out: Deferred[RouteResult] = Deferred(cancel)

        def went_on(early: RouteResult | None) -> None:
            if early is not None:
                self._complete(early, ctx, i + 1)
                out.callback(early)
                return
            d = self.run(ctx, route, i + 1)
            inner.append(d)
            d.chainDeferred(out)

        def refused(failure: Failure) -> None:
            self._after(ctx, i, None, failure)
            out.errback(failure)

        pending.addCallbacks(went_on, refused)
        return out

    def _complete(self, outcome: Any, ctx: RouteContext, ran: int) -> Any:
        """The afters of the first ``ran`` stages, now (a failure, a JSON answer) or
        when the stream has been relayed to its end."""
        if isinstance(outcome, Failure):
            self._after(ctx, ran, None, outcome)
            return outcome
        result: RouteResult = outcome
        if result.response.stream is None:
            if ran == 1:  # the common case, without a slice and a call
                try:
                    self.stages[0].after(ctx, result, None)
                except Exception:
                    log.failure("a stage's after step failed", Failure())
            else:
                self._after(ctx, ran, result, None)
            return result
        relayed = result.finish

        def finish(failure: UpstreamFailure | None) -> None:
            result.finish = relayed  # result -> finish -> result: no cycle left behind
            relayed(failure)
            self._after(ctx, ran, result, None if failure is None else Failure(failure))

        result.finish = finish
        return result

    def _after(
        self, ctx: RouteContext, ran: int, result: RouteResult | None, failure: Failure | None
    ) -> None:
        for stage in reversed(self.stages[:ran]):
            try:
                stage.after(ctx, result, failure)
            except Exception:  # one stage's bug must not skip the others' settling
                log.failure("a stage's after step failed", Failure())
