"""Review of the merged routing and limits: regression tests for what it found."""

from __future__ import annotations

from collections import Counter

from test_routing import Harness, conf, entry, outcome


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
