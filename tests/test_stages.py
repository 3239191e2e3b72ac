"""The stage seam: befores in order, afters in reverse once the answer is complete,
early answers, refusals, waits, cancellation, and stream taps."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.python.failure import Failure

from gatewayd.providers.base import Endpoint, EventStream, ProviderRequest, UpstreamResponse
from gatewayd.routing import RouteError, RouteResult
from gatewayd.stages import Pipeline, RouteContext
from gatewayd.stages.base import Before


class Recorder:
    """A stage that notes its steps in a shared log and can answer or refuse."""

    def __init__(self, name: str, log: list[str], before: Any = None) -> None:
        self.name = name
        self.log = log
        self.answer = before
        self.outcomes: list[tuple[RouteResult | None, Failure | None]] = []

    def before(self, ctx: RouteContext) -> Before:
        self.log.append(f"before {self.name}")
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[no-any-return]

    def after(self, ctx: RouteContext, result: RouteResult | None, failure: Failure | None) -> None:
        self.log.append(f"after {self.name}")
        self.outcomes.append((result, failure))


class NoStream(EventStream):
    def start(self, sink: Any) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def cancel(self) -> None: ...


def ctx() -> RouteContext:
    call = ProviderRequest(Endpoint.CHAT, {"model": "a", "messages": []})
    return RouteContext(None, None, "a", call)  # type: ignore[arg-type]


def result(stream: EventStream | None = None) -> RouteResult:
    return RouteResult(UpstreamResponse(200, body=b"{}", stream=stream), "a", "a-0", 1, None)


def results(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_befores_in_order_afters_in_reverse() -> None:
    log: list[str] = []
    stages = [Recorder("one", log), Recorder("two", log), Recorder("three", log)]
    routed = result()

    def route(c: RouteContext) -> Deferred[RouteResult]:
        log.append("route")
        return succeed(routed)

    got = results(Pipeline(stages).run(ctx(), route))
    assert got == [routed]
    assert log == [
        "before one",
        "before two",
        "before three",
        "route",
        "after three",
        "after two",
        "after one",
    ]
    assert stages[0].outcomes == [(routed, None)]


def test_an_early_answer_skips_the_route_and_the_stages_inside_it() -> None:
    log: list[str] = []
    hit = result()
    stages = [Recorder("outer", log), Recorder("cache", log, hit), Recorder("inner", log)]

    def route(c: RouteContext) -> Deferred[RouteResult]:
        raise AssertionError("a hit must not be routed")

    assert results(Pipeline(stages).run(ctx(), route)) == [hit]
    assert log == ["before outer", "before cache", "after cache", "after outer"]


def test_a_refusal_fails_the_request_and_the_outer_stages_see_it() -> None:
    log: list[str] = []
    refusal = RouteError(429, {"message": "over"}, 0)
    stages = [Recorder("outer", log), Recorder("limits", log, refusal), Recorder("inner", log)]
    got = results(Pipeline(stages).run(ctx(), lambda c: succeed(result())))
    assert isinstance(got[0], Failure) and got[0].value is refusal
    assert log == ["before outer", "before limits", "after outer"]
    assert stages[0].outcomes[0][1] is not None
    assert stages[0].outcomes[0][1].value is refusal


def test_a_route_failure_reaches_every_after() -> None:
    log: list[str] = []
    stages = [Recorder("one", log), Recorder("two", log)]
    err = RouteError(502, {"message": "down"}, 3)
    got = results(Pipeline(stages).run(ctx(), lambda c: fail(err)))
    assert got[0].value is err
    assert [o[1].value for s in stages for o in s.outcomes if o[1]] == [err, err]


def test_a_waiting_before_goes_on_when_it_fires_and_can_be_cancelled() -> None:
    log: list[str] = []
    wait: Deferred[RouteResult | None] = Deferred()
    stages = [Recorder("limits", log, wait), Recorder("inner", log)]
    routed = result()
    d = Pipeline(stages).run(ctx(), lambda c: succeed(routed))
    got = results(d)
    assert got == [] and log == ["before limits"]
    wait.callback(None)
    assert got == [routed]
    assert log[-3:] == ["before inner", "after inner", "after limits"]

    log.clear()
    waiting: Deferred[RouteResult | None] = Deferred()
    d = Pipeline([Recorder("limits", log, waiting)]).run(ctx(), lambda c: succeed(routed))
    got = results(d)
    d.cancel()
    assert got[0].check(CancelledError)
    # A stage whose before did not go on (refused, cancelled) settles that itself.
    assert log == ["before limits"]


def test_cancelling_after_the_wait_cancels_the_route() -> None:
    wait: Deferred[RouteResult | None] = Deferred()
    routing: Deferred[RouteResult] = Deferred()
    d = Pipeline([Recorder("limits", [], wait)]).run(ctx(), lambda c: routing)
    wait.callback(None)
    got = results(d)
    d.cancel()
    assert routing.called and got[0].check(CancelledError)


def test_a_streams_afters_wait_for_its_end() -> None:
    log: list[str] = []
    stage = Recorder("one", log)
    ended: list[Any] = []
    routed = result(NoStream())
    routed.finish = ended.append
    got = results(Pipeline([stage]).run(ctx(), lambda c: succeed(routed)))
    assert got == [routed]
    assert log == ["before one"]  # the stream is still being relayed
    routed.finish(None)
    assert ended == [None]  # the routing's own finish still runs (frees the slot)
    assert log == ["before one", "after one"]


def test_one_stages_broken_after_does_not_skip_the_others() -> None:
    log: list[str] = []

    class Broken(Recorder):
        def after(self, ctx: RouteContext, r: RouteResult | None, f: Failure | None) -> None:
            raise RuntimeError("bug")

    outer = Recorder("outer", log)
    got = results(Pipeline([outer, Broken("b", log)]).run(ctx(), lambda c: succeed(result())))
    assert len(got) == 1 and not isinstance(got[0], Failure)
    assert outer.outcomes and log[-1] == "after outer"


@pytest.mark.parametrize("n", [0, 1, 3])
def test_the_context_carries_taps_and_scratch(n: int) -> None:
    c = ctx()
    assert c.taps == [] and c.scratch == {} and c.cached is False
    for _ in range(n):
        c.taps.append(object())  # type: ignore[arg-type]
    assert len(c.taps) == n
