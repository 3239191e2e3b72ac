"""Deployment limits at pick time and shared cooldowns, on a fake clock with the memory
store: a deployment at its rpm/tpm is skipped, then the fallbacks, then 429."""

from __future__ import annotations

from test_routing import Harness, conf, entry, http_fail, outcome
from twisted.internet.task import Clock

from gatewayd.limits import Limiter
from gatewayd.routing import RouteError, RouteResult
from gatewayd.routing.cooldown import Cooldowns
from gatewayd.routing.shared_cooldowns import SharedCooldowns
from gatewayd.state import MemoryStore


def limited(yaml_text: str, **kw: object) -> Harness:
    h = Harness(yaml_text, **kw)  # type: ignore[arg-type]
    h.router.limiter = Limiter(MemoryStore(h.clock), h.clock)
    return h


def test_a_deployment_at_its_rpm_is_skipped_then_the_alias_429s() -> None:
    h = limited(conf([entry("a", "d1", ", rpm: 1"), entry("a", "d2", ", rpm: 2")]))
    got = [outcome(h.route("a")) for _ in range(3)]
    assert all(isinstance(r, RouteResult) for r in got)
    assert (h.calls("d1"), h.calls("d2")) == (1, 2)
    h.clock.advance(30)
    err = outcome(h.route("a"))
    assert isinstance(err, RouteError) and err.status == 429
    assert err.error["type"] == "rate_limit_error" and err.attempts == 0
    assert err.retry_after == 30  # the first window to reopen
    assert (b"x-ratelimit-remaining-requests", b"0") in err.headers
    h.clock.advance(30)
    assert isinstance(outcome(h.route("a")), RouteResult)


def test_fallback_when_every_deployment_is_at_its_limit() -> None:
    h = limited(
        conf(
            [entry("a", "d1", ", rpm: 1"), entry("b", "d2")],
            "  fallbacks: [{a: [b]}]\n",
        )
    )
    first, second = outcome(h.route("a")), outcome(h.route("a"))
    assert first.fallback is None and second.fallback == "b"
    assert (h.calls("d1"), h.calls("d2")) == (1, 1)


def test_tpm_reservation_is_given_back_when_the_attempt_fails() -> None:
    h = limited(conf([entry("a", "d1", ", tpm: 2000")]), scripts={"d1": [http_fail(400)]})
    assert isinstance(outcome(h.route("a")), RouteError)  # reserved 1 + 1024, then refunded
    assert isinstance(outcome(h.route("a")), RouteResult)
    assert isinstance(outcome(h.route("a")), RouteResult)  # 1025 < 2000
    err = outcome(h.route("a"))
    assert isinstance(err, RouteError) and err.status == 429


def test_without_a_limiter_rpm_is_not_enforced() -> None:
    h = Harness(conf([entry("a", "d1", ", rpm: 1")]))
    assert all(isinstance(outcome(h.route("a")), RouteResult) for _ in range(3))


def test_shared_cooldowns_reach_another_instance() -> None:
    clock = Clock()
    clock.advance(1000)
    store = MemoryStore(clock)  # what both instances share (Redis in production)
    a, b = Cooldowns(clock, 0, 30), Cooldowns(clock, 0, 30)
    sa = SharedCooldowns(store, a, clock, lambda: {"d1"})
    sb = SharedCooldowns(store, b, clock, lambda: {"d1"})
    a.failure("d1", "down", 503, transient=True)
    sa.publish("d1", a.get("d1").cooldown_until)
    assert not b.is_cooling("d1")
    sb.start()  # syncs at once, then every second
    assert b.is_cooling("d1")
    assert "another gateway instance" in (b.get("d1").last_error or "")
    clock.advance(30)
    assert not b.is_cooling("d1")
    sb.stop()
