"""The router's logic and timing on a fake clock: retries, backoff, Retry-After,
cooldowns, fallbacks, balancing, capacity queueing and cancellation."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from gatewayd.config import Deployment, parse_config
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    EventStream,
    FailureKind,
    Provider,
    ProviderRequest,
    StreamSink,
    UpstreamFailure,
    UpstreamResponse,
    openai_error,
)
from gatewayd.routing import RouteError, Router, RouteResult, build_table
from gatewayd.routing.retry import RetryPolicy

Outcome = UpstreamFailure | UpstreamResponse | float  # a float: hang that long, then succeed


def http_fail(
    status: int, retry_after: float | None = None, code: str | None = None
) -> UpstreamFailure:
    return UpstreamFailure(
        FailureKind.HTTP,
        status,
        openai_error(f"upstream said {status}", code=code),
        retry_after=retry_after,
    )


def refused() -> UpstreamFailure:
    return UpstreamFailure(FailureKind.CONNECT, 502, openai_error("connection refused"))


def port_refused() -> UpstreamFailure:
    """A connection refused outright: nothing listens on the port."""
    return UpstreamFailure(
        FailureKind.CONNECT, 502, openai_error("connection refused"), refused=True
    )


OK = UpstreamResponse(200, body=b'{"ok": true}')


class ScriptedProvider(Provider):
    """Answers each call with the next scripted outcome; then with OK."""

    def __init__(self, deployment: Deployment, clock: Clock, script: list[Outcome]) -> None:
        super().__init__(deployment)
        self.clock = clock
        self.script = script
        self.calls: list[float] = []
        self.cancelled = 0
        self.pending: list[Deferred[UpstreamResponse]] = []

    def send(self, request: ProviderRequest, limits: AttemptLimits) -> Deferred[UpstreamResponse]:
        self.calls.append(self.clock.seconds())
        outcome: Outcome = self.script.pop(0) if self.script else OK
        if isinstance(outcome, UpstreamFailure):
            return fail(outcome)
        if isinstance(outcome, UpstreamResponse):
            return succeed(outcome)

        def cancel(_: Deferred[UpstreamResponse]) -> None:
            self.cancelled += 1
            call.cancel()

        d: Deferred[UpstreamResponse] = Deferred(cancel)
        call = self.clock.callLater(outcome, lambda: d.callback(OK))
        self.pending.append(d)
        return d


class Harness:
    def __init__(
        self, yaml_text: str, scripts: dict[str, list[Outcome]] | None = None, seed: int = 1
    ) -> None:
        self.clock = Clock()
        self.config = parse_config(yaml_text, environ={})
        scripts = scripts or {}
        self.providers: dict[str, ScriptedProvider] = {}

        def make(d: Deployment) -> Provider:
            p = ScriptedProvider(d, self.clock, scripts.get(d.id, []))
            self.providers[d.id] = p
            return p

        self.router = Router(build_table(self.config, make), self.clock, random.Random(seed))

    def route(self, alias: str, stream: bool = False) -> Deferred[RouteResult]:
        return self.router.route(alias, ProviderRequest(Endpoint.CHAT, {"model": alias}, stream))

    def calls(self, dep_id: str) -> int:
        return len(self.providers[dep_id].calls)


def outcome(d: Deferred[Any]) -> Any:
    """The result of a fired Deferred, or its exception."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    r = box[0]
    return r.value if isinstance(r, Failure) else r


def entry(alias: str, ident: str, extra: str = "") -> str:
    return (
        f"  - model_name: {alias}\n"
        f"    params: {{model: openai/{ident}, api_base: 'http://127.0.0.1:9/v1', api_key: k{extra}}}\n"
        f"    model_info: {{id: {ident}}}\n"
    )


def conf(entries: Sequence[str], general: str = "") -> str:
    return "model_list:\n" + "".join(entries) + ("general_settings:\n" + general if general else "")


# -- backoff schedule ----------------------------------------------------------


def test_backoff_doubles_from_half_a_second_and_caps_at_eight() -> None:
    policy = RetryPolicy(num_retries=10, jitter=0.0)
    rng = random.Random(0)
    assert [policy.backoff(n, rng) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_backoff_jitter_stays_within_a_quarter_below() -> None:
    policy = RetryPolicy()
    rng = random.Random(42)
    for n in range(1, 6):
        base = min(8.0, 0.5 * 2 ** (n - 1))
        for _ in range(50):
            assert 0.75 * base <= policy.backoff(n, rng) <= base


def test_retry_after_used_when_short_and_refused_when_too_long() -> None:
    policy = RetryPolicy(max_retry_after=8.0)
    rng = random.Random(0)
    assert policy.wait_before_retry(1, 3.0, rng) == 3.0
    assert policy.wait_before_retry(1, 30.0, rng) is None
    assert policy.wait_before_retry(1, None, rng) is not None


# -- retries -------------------------------------------------------------------


def test_transient_failure_retried_after_backoff_then_succeeds() -> None:
    h = Harness(
        conf([entry("a", "a1")], "  num_retries: 2\n"), {"a1": [http_fail(503), http_fail(500)]}
    )
    d = h.route("a")
    assert not d.called
    assert h.calls("a1") == 1
    h.clock.advance(0.5)  # first backoff is at most 0.5 s
    assert h.calls("a1") == 2
    assert not d.called
    h.clock.advance(1.0)  # second at most 1 s
    result = outcome(d)
    assert isinstance(result, RouteResult)
    assert result.attempts == 3 and result.alias == "a" and result.fallback is None
    times = h.providers["a1"].calls
    assert 0.375 <= times[1] - times[0] <= 0.5
    assert 0.75 <= times[2] - times[1] <= 1.0


def test_client_errors_are_not_retried_and_pass_through() -> None:
    for status in (400, 413, 422):
        h = Harness(
            conf(
                [entry("a", "a1"), entry("b", "b1")], "  num_retries: 3\n  fallbacks: [{a: [b]}]\n"
            ),
            {"a1": [http_fail(status)]},
        )
        err = outcome(h.route("a"))
        assert isinstance(err, RouteError)
        assert err.status == status and err.attempts == 1
        assert err.error["message"] == f"upstream said {status}"
        assert h.calls("a1") == 1 and h.calls("b1") == 0


def test_no_sleep_when_another_healthy_deployment_is_left() -> None:
    h = Harness(
        conf([entry("a", "a1"), entry("a", "a2")], "  num_retries: 1\n"),
        {"a1": [http_fail(503)], "a2": [http_fail(503)]},
    )
    d = h.route("a")
    # Both deployments tried at once: the retry went to the untried one without sleeping.
    assert h.calls("a1") + h.calls("a2") == 2
    err = outcome(d)
    assert isinstance(err, RouteError) and err.status == 503 and err.attempts == 2
    assert "2 attempt(s) failed: a: 503 upstream said 503" in err.error["message"]


def test_retry_after_is_honoured() -> None:
    h = Harness(
        conf([entry("a", "a1")], "  num_retries: 1\n"), {"a1": [http_fail(429, retry_after=3)]}
    )
    d = h.route("a")
    h.clock.advance(2.9)
    assert not d.called and h.calls("a1") == 1
    h.clock.advance(0.2)
    assert isinstance(outcome(d), RouteResult)


def test_long_retry_after_moves_to_fallback_without_sleeping() -> None:
    h = Harness(
        conf([entry("a", "a1"), entry("b", "b1")], "  num_retries: 3\n  fallbacks: [{a: [b]}]\n"),
        {"a1": [http_fail(429, retry_after=60)]},
    )
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult)
    assert result.fallback == "b" and result.attempts == 2
    assert h.clock.seconds() == 0


# -- fallbacks -----------------------------------------------------------------


def test_fallbacks_in_order_each_with_its_own_retries() -> None:
    h = Harness(
        conf(
            [entry("a", "a1"), entry("b", "b1"), entry("c", "c1")],
            "  num_retries: 1\n  fallbacks: [{a: [b, c]}]\n",
        ),
        {"a1": [refused(), refused()], "b1": [refused(), refused()]},
    )
    d = h.route("a")
    h.clock.pump([0.5, 0.5, 0.5])
    result = outcome(d)
    assert isinstance(result, RouteResult)
    assert (h.calls("a1"), h.calls("b1"), h.calls("c1")) == (2, 2, 1)
    assert result.alias == "c" and result.fallback == "c" and result.attempts == 5


def test_a_refused_port_goes_to_the_fallback_at_once() -> None:
    # The seed's configuration with its local server not running (issue 17): two
    # retries, a fallback; the refused port is not retried after a sleep.
    h = Harness(
        conf(
            [entry("local", "l1"), entry("cloud", "c1")],
            "  num_retries: 2\n  fallbacks: [{local: [cloud]}]\n",
        ),
        {"l1": [port_refused(), port_refused(), port_refused()]},
    )
    result = outcome(h.route("local"))  # fired with the clock never advanced
    assert isinstance(result, RouteResult) and result.alias == "cloud"
    assert (h.calls("l1"), h.calls("c1")) == (1, 1)


def test_dead_fallbacks_each_cost_no_sleep() -> None:
    h = Harness(
        conf(
            [entry("a", "a1"), entry("b", "b1"), entry("c", "c1")],
            "  num_retries: 1\n  fallbacks: [{a: [b, c]}]\n",
        ),
        {"a1": [port_refused()], "b1": [port_refused()]},
    )
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult) and result.alias == "c"
    assert (h.calls("a1"), h.calls("b1"), h.calls("c1")) == (1, 1, 1)


def test_a_refused_port_tries_the_other_deployments_then_the_fallback() -> None:
    h = Harness(
        conf(
            [entry("a", "a1"), entry("a", "a2"), entry("b", "b1")],
            "  num_retries: 3\n  fallbacks: [{a: [b]}]\n",
        ),
        {"a1": [port_refused()] * 4, "a2": [port_refused()] * 4},
    )
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult) and result.alias == "b"
    assert (h.calls("a1"), h.calls("a2"), h.calls("b1")) == (1, 1, 1)


def test_a_refused_port_with_nothing_else_left_is_retried_after_the_backoff() -> None:
    h = Harness(
        conf([entry("a", "a1")], "  num_retries: 2\n"),
        {"a1": [port_refused(), port_refused()]},
    )
    d = h.route("a")
    assert not d.called and h.calls("a1") == 1
    h.clock.advance(0.5)
    assert h.calls("a1") == 2 and not d.called
    h.clock.advance(1.0)
    assert isinstance(outcome(d), RouteResult) and h.calls("a1") == 3


@pytest.mark.parametrize("status", [401, 403, 404])
def test_misconfigured_deployment_falls_back_without_retry(status: int) -> None:
    h = Harness(
        conf([entry("a", "a1"), entry("b", "b1")], "  num_retries: 2\n  fallbacks: [{a: [b]}]\n"),
        {"a1": [http_fail(status)]},
    )
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult) and result.fallback == "b"
    assert h.calls("a1") == 1


def test_fallbacks_of_a_fallback_are_not_followed() -> None:
    h = Harness(
        conf(
            [entry("a", "a1"), entry("b", "b1"), entry("c", "c1")],
            "  fallbacks: [{a: [b]}, {b: [c]}]\n",
        ),
        {"a1": [refused()], "b1": [refused()]},
    )
    err = outcome(h.route("a"))
    assert isinstance(err, RouteError) and err.status == 502
    assert h.calls("c1") == 0


def test_default_fallbacks_apply_to_aliases_without_a_list() -> None:
    h = Harness(
        conf([entry("a", "a1"), entry("z", "z1")], "  default_fallbacks: [z]\n"),
        {"a1": [http_fail(500)]},
    )
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult) and result.fallback == "z"


def test_context_window_error_goes_to_context_window_fallbacks() -> None:
    h = Harness(
        conf(
            [entry("a", "a1"), entry("b", "b1"), entry("big", "big1")],
            "  fallbacks: [{a: [b]}]\n  context_window_fallbacks: [{a: [big]}]\n",
        ),
        {"a1": [http_fail(400, code="context_length_exceeded")]},
    )
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult) and result.alias == "big"
    assert h.calls("b1") == 0


def test_context_window_error_without_fallbacks_goes_back_unchanged() -> None:
    h = Harness(conf([entry("a", "a1")]), {"a1": [http_fail(400, code="context_length_exceeded")]})
    err = outcome(h.route("a"))
    assert isinstance(err, RouteError) and err.status == 400
    assert err.error["code"] == "context_length_exceeded"


# -- cooldowns -----------------------------------------------------------------


def test_cooldown_after_allowed_fails_then_expiry() -> None:
    h = Harness(
        conf(
            [entry("a", "a1"), entry("b", "b1")],
            "  allowed_fails: 1\n  cooldown_time: 30\n  fallbacks: [{a: [b]}]\n",
        ),
        {"a1": [refused(), refused()]},
    )
    for _ in range(2):
        assert isinstance(outcome(h.route("a")), RouteResult)
    assert h.calls("a1") == 2
    assert h.router.health.is_cooling("a1")
    # While cooling down, requests go straight to the fallback without calling a1.
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult) and result.fallback == "b" and result.attempts == 1
    assert h.calls("a1") == 2
    h.clock.advance(30.1)
    assert not h.router.health.is_cooling("a1")
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult) and result.fallback is None
    assert h.calls("a1") == 3


def test_success_resets_the_failure_count() -> None:
    h = Harness(
        conf([entry("a", "a1")], "  allowed_fails: 1\n"), {"a1": [refused(), OK, refused()]}
    )
    for _ in range(3):
        outcome(h.route("a"))
    assert not h.router.health.is_cooling("a1")


def test_429_retry_after_sets_cooldown_length() -> None:
    h = Harness(
        conf([entry("a", "a1"), entry("b", "b1")], "  allowed_fails: 0\n  fallbacks: [{a: [b]}]\n"),
        {"a1": [http_fail(429, retry_after=5)]},
    )
    outcome(h.route("a"))
    assert h.router.health.is_cooling("a1")
    h.clock.advance(5.1)
    assert not h.router.health.is_cooling("a1")


def test_all_cooling_without_fallback_probes_the_one_ending_first() -> None:
    h = Harness(
        conf([entry("a", "a1"), entry("a", "a2")], "  allowed_fails: 0\n  cooldown_time: 30\n"),
        {"a1": [refused()], "a2": [refused()]},
    )
    outcome(h.route("a"))
    h.clock.advance(1)
    outcome(h.route("a"))
    assert h.router.health.is_cooling("a1") and h.router.health.is_cooling("a2")
    first = (
        "a1"
        if h.router.health.get("a1").cooldown_until < h.router.health.get("a2").cooldown_until
        else "a2"
    )
    before = h.calls(first)
    result = outcome(h.route("a"))
    assert isinstance(result, RouteResult) and result.deployment == first
    assert h.calls(first) == before + 1


# -- balancing and capacity ----------------------------------------------------


def test_simple_shuffle_follows_weights() -> None:
    h = Harness(conf([entry("a", "a1", ", weight: 9"), entry("a", "a2", ", weight: 1")]))
    for _ in range(1000):
        outcome(h.route("a"))
    assert 850 <= h.calls("a1") <= 950


def test_least_busy_picks_the_deployment_with_fewest_in_flight() -> None:
    h = Harness(
        conf([entry("a", "a1"), entry("a", "a2")], "  routing_strategy: least-busy\n"),
        {"a1": [10.0, 10.0], "a2": [10.0, 10.0]},
    )
    for _ in range(4):
        h.route("a")
    assert h.calls("a1") == 2 and h.calls("a2") == 2


def test_max_parallel_requests_queues_fifo_within_the_timeout() -> None:
    h = Harness(conf([entry("a", "a1", ", max_parallel_requests: 1")]), {"a1": [1.0, 1.0, 1.0]})
    d1, d2, d3 = h.route("a"), h.route("a"), h.route("a")
    assert h.calls("a1") == 1
    order: list[int] = []
    d2.addCallback(lambda _: order.append(2))
    d3.addCallback(lambda _: order.append(3))
    h.clock.advance(1.0)
    assert d1.called and h.calls("a1") == 2
    h.clock.advance(1.0)
    h.clock.advance(1.0)
    assert order == [2, 3]


class IdleStream(EventStream):
    def start(self, sink: StreamSink) -> None:
        pass

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def cancel(self) -> None:
        pass


def test_queue_wait_is_bounded_by_request_timeout_and_a_stream_holds_its_slot() -> None:
    h = Harness(
        conf([entry("a", "a1", ", max_parallel_requests: 1")], "  request_timeout: 5\n"),
        {"a1": [UpstreamResponse(200, stream=IdleStream())]},
    )
    first = outcome(h.route("a", stream=True))
    assert isinstance(first, RouteResult)
    queued = h.route("a")
    h.clock.advance(5.1)
    err = outcome(queued)
    # Nothing could be tried: 503, not a timeout of an upstream.
    assert isinstance(err, RouteError) and err.status == 503 and err.attempts == 0
    assert err.error["code"] == "no_deployment_available"
    first.finish(None)  # the stream ends: its slot is free, the timed-out waiter is gone
    assert h.router.health.get("a1").in_flight == 0
    assert isinstance(outcome(h.route("a")), RouteResult)


# -- cancellation --------------------------------------------------------------


def test_cancel_during_backoff_stops_everything() -> None:
    h = Harness(conf([entry("a", "a1")], "  num_retries: 3\n"), {"a1": [refused()]})
    d = h.route("a")
    assert h.calls("a1") == 1
    d.cancel()
    assert isinstance(outcome(d), CancelledError)
    h.clock.advance(60)
    assert h.calls("a1") == 1
    assert h.router.health.get("a1").in_flight == 0


def test_cancel_while_waiting_on_upstream_cancels_the_attempt() -> None:
    h = Harness(conf([entry("a", "a1")]), {"a1": [100.0]})
    d = h.route("a")
    assert h.router.health.get("a1").in_flight == 1
    d.cancel()
    assert isinstance(outcome(d), CancelledError)
    assert h.providers["a1"].cancelled == 1
    assert h.router.health.get("a1").in_flight == 0


def test_request_timeout_bounds_the_whole_chain() -> None:
    h = Harness(
        conf([entry("a", "a1")], "  request_timeout: 10\n  num_retries: 5\n"), {"a1": [100.0]}
    )
    d = h.route("a")
    h.clock.advance(10.01)
    err = outcome(d)
    assert isinstance(err, RouteError) and err.status == 504
    assert h.providers["a1"].cancelled == 1


def test_reload_swaps_table_and_keeps_health_of_unchanged_deployments() -> None:
    h = Harness(
        conf([entry("a", "a1"), entry("b", "b1")], "  allowed_fails: 0\n  fallbacks: [{a: [b]}]\n"),
        {"a1": [refused()]},
    )
    outcome(h.route("a"))
    assert h.router.health.is_cooling("a1")
    cfg = parse_config(conf([entry("a", "a1"), entry("c", "c1")]), environ={})
    h.router.swap(build_table(cfg, lambda d: ScriptedProvider(d, h.clock, [])))
    assert "c" in h.router.table.routes and "b" not in h.router.table.routes
    assert h.router.health.is_cooling("a1")
    assert "b1" not in h.router.health.states


def test_a_deployment_that_just_tripped_its_cooldown_is_not_waited_on() -> None:
    h = Harness(
        conf(
            [entry("a", "a1"), entry("b", "b1")],
            "  num_retries: 3\n  allowed_fails: 0\n  fallbacks: [{a: [b]}]\n",
        ),
        {"a1": [refused()]},
    )
    result = outcome(h.route("a"))
    # a1 failed once and went into cooldown: straight to the fallback, no backoff sleep.
    assert isinstance(result, RouteResult) and result.fallback == "b"
    assert h.clock.seconds() == 0 and h.calls("a1") == 1


def test_the_last_retry_after_reaches_the_client() -> None:
    h = Harness(conf([entry("a", "a1")]), {"a1": [http_fail(429, retry_after=42)]})
    err = outcome(h.route("a"))
    assert isinstance(err, RouteError) and err.status == 429 and err.retry_after == 42


# -- what a failed chain says ----------------------------------------------------


def timed_out(seconds: float) -> UpstreamFailure:
    return UpstreamFailure(
        FailureKind.TIMEOUT,
        504,
        openai_error(
            f"upstream did not answer within {seconds:g} s", "timeout", "upstream_timeout"
        ),
    )


def test_a_failed_chain_names_each_alias_and_its_last_failure() -> None:
    h = Harness(
        conf(
            [entry("smart", "s1"), entry("fast", "f1"), entry("local", "l1")],
            "  num_retries: 1\n  fallbacks: [{smart: [fast, local]}]\n",
        ),
        {
            "s1": [refused(), http_fail(503)],
            "f1": [http_fail(500), refused()],
            "l1": [timed_out(30), timed_out(30)],
        },
    )
    d = h.route("smart")
    h.clock.pump([1.0] * 6)
    err = outcome(d)
    assert isinstance(err, RouteError) and err.status == 504 and err.attempts == 6
    assert err.error["message"] == (
        "upstream did not answer within 30 s (gatewayd: 6 attempt(s) failed: "
        "smart: 503 upstream said 503; fast: connection refused; "
        "local: upstream did not answer within 30 s)"
    )


def test_the_summary_of_a_failed_chain_is_short_whatever_the_upstreams_said() -> None:
    aliases = [f"alias{i}" for i in range(30)]
    long = UpstreamFailure(FailureKind.HTTP, 503, openai_error("overloaded " * 500))
    h = Harness(
        conf(
            [entry(a, a + "d") for a in aliases],
            f"  fallbacks: [{{alias0: [{', '.join(aliases[1:])}]}}]\n",
        ),
        {a + "d": [long] for a in aliases},
    )
    err = outcome(h.route("alias0"))
    assert isinstance(err, RouteError) and err.attempts == 30
    message = err.error["message"]
    summary = message[len(long.message) :]
    assert summary.startswith(" (gatewayd: 30 attempt(s) failed: alias0: 503 overloaded overloaded")
    assert len(summary) <= 700
    assert "alias1: 503 overloaded" in summary


def test_request_timeout_says_what_failed_before_it() -> None:
    h = Harness(
        conf([entry("a", "a1")], "  request_timeout: 10\n  num_retries: 5\n"),
        {"a1": [http_fail(503), 100.0]},
    )
    d = h.route("a")
    h.clock.pump([0.5, 10.0])
    err = outcome(d)
    assert isinstance(err, RouteError) and err.status == 504
    assert err.error["code"] == "request_timeout"
    assert err.error["message"] == (
        "request_timeout of 10 s exceeded after 2 attempt(s) (a: 503 upstream said 503)"
    )
