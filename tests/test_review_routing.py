"""Review of the merged routing and limits: regression tests for what it found."""

from __future__ import annotations

from collections import Counter

from test_limits_routing import limited
from test_routing import Harness, conf, entry, http_fail, outcome

from gatewayd.limits import Estimate
from gatewayd.routing import RouteResult


def test_rpm_is_a_limit_not_a_weight_picks_stay_even() -> None:
    # behaviour.md: "rpm and tpm on a deployment and on a key are limits, not weights".
    h = Harness(conf([entry("a", "a1", ", rpm: 9000"), entry("a", "a2", ", rpm: 1000")]))
    for _ in range(1000):
        outcome(h.route("a"))
    assert 400 <= h.calls("a1") <= 600, Counter({"a1": h.calls("a1"), "a2": h.calls("a2")})


def test_weights_still_decide_when_rpm_is_also_set() -> None:
    h = Harness(
        conf([entry("a", "a1", ", weight: 1, rpm: 9000"), entry("a", "a2", ", weight: 9, rpm: 10")])
    )
    for _ in range(1000):
        outcome(h.route("a"))
    assert 850 <= h.calls("a2") <= 950


def test_a_retry_backs_off_when_the_only_other_deployment_is_at_its_limit() -> None:
    # The other deployment is at its rpm: the retry must wait its backoff, not hit the
    # failing deployment again at once as if another one were available.
    h = limited(
        conf([entry("a", "d1"), entry("a", "d2", ", rpm: 1")], "  num_retries: 1\n"),
        scripts={"d1": [http_fail(503)]},
    )
    d2 = next(r.deployment for r in h.router.table.routes["a"] if r.id == "d2")
    assert h.router.limiter is not None
    outcome(h.router.limiter.admit_deployment(d2, Estimate(1, 1)))  # d2's minute is used
    for seed in range(4):  # (within d2's minute) whichever deployment the first pick lands on
        h.router.rng.seed(seed)
        h.providers["d1"].script[:] = [http_fail(503)]
        h.providers["d1"].calls.clear()
        d = h.route("a")
        assert h.calls("d1") == 1 and not d.called  # sleeping before the retry
        h.clock.advance(10)
        assert h.calls("d1") == 2 and isinstance(outcome(d), RouteResult)
        assert h.calls("d2") == 0
