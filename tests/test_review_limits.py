# ruff: noqa: F811 - the store fixtures are imported, then used as parameters
"""Review of the merged limits: regression tests, on both stores."""

from __future__ import annotations

from test_limits import Env, key
from test_state_store import deferred_test, env, redis_server  # noqa: F401 - fixtures
from twisted.internet import reactor
from twisted.internet.task import deferLater

from gatewayd.config.keys import Budget
from gatewayd.limits import Limiter, Spent, estimate

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


async def settled() -> None:
    """A settle is sent without waiting; the first one on a fresh Redis also loads its
    script (a round trip): let it land before the next take."""
    await deferLater(reactor, 0.1)


@deferred_test
async def test_an_absurd_max_tokens_does_not_wreck_the_counters(env: Env) -> None:
    # A client's max_tokens of 1e23 (valid JSON) was reserved as is: the float sum lost
    # the tokens counted before it, and the settle left garbage that refused the key.
    store, clock, ns = env
    lim = Limiter(store, clock)
    k = key(ns, tpm=100_000, budget=Budget(tokens=1000, usd=None, period=3600, period_text="1h"))
    t = await lim.admit_key(k, estimate(CHAT))
    t.settle(Spent(30, 5))
    await settled()
    for huge in (10**23, 2**70, 10**40):
        t = await lim.admit_key(k, estimate({**CHAT, "max_tokens": huge, "n": 10**20}))
        t.settle(Spent(1, 4))
        await settled()
    info = await lim.key_info(k)
    assert info["spend"]["tokens"] == 35 + 3 * 5
    assert info["tpm"]["remaining"] == 100_000 - 50
    assert info["budget"]["remaining_tokens"] == 1000 - 50
