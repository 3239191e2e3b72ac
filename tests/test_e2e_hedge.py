"""Hedged requests end to end: the real daemon in front of a replica that stalls its
first byte and one that answers; the hedge wins, the stalled connection is closed, and
the metrics and the access log say so."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pytest
from conftest import GatewayFactory, openai_entry, sdk
from test_e2e_streaming import wait_for

from gatewayd.testing import FakeUpstream, Reply, Stream


@pytest.fixture
def stalled() -> Iterator[FakeUpstream]:
    # Headers at once, then no first event for 30 s (unless the gateway hangs up).
    with FakeUpstream(default=Stream(first_byte_delay=30.0), content="from stalled") as s:
        yield s


@pytest.fixture
def quick() -> Iterator[FakeUpstream]:
    with FakeUpstream(default=Reply(), content="from quick") as s:
        yield s


def test_the_hedge_wins_and_the_stalled_connection_is_closed(
    gateway: GatewayFactory, stalled: FakeUpstream, quick: FakeUpstream
) -> None:
    config = {
        "model_list": [
            # The weights make the stalled replica the first choice (almost surely).
            openai_entry("fleet", stalled, "m", weight=1000000),
            openai_entry("fleet", quick, "m", weight=0.000001),
        ],
        "general_settings": {"hedge": {"after_ms": 300, "budget_percent": 100}},
    }
    gw = gateway(config)
    client = sdk(gw.base_url)
    start = time.monotonic()
    stream = client.chat.completions.create(
        model="fleet", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    took = time.monotonic() - start
    assert text == "from quick"
    assert took < 10.0  # not the stalled replica's 30 s
    # Each replica got the request once; the stalled one saw the gateway hang up.
    assert stalled.count("/chat/completions") == 1 and quick.count("/chat/completions") == 1
    stats = stalled.wait_for_streams(1)[0]
    assert wait_for(lambda: stats.client_closed, 10.0), stats
    assert stats.events_written == 0  # it never produced a first event
    assert quick.last_request.json()["model"] == stalled.last_request.json()["model"] == "m"
    assert wait_for(lambda: "hedge=hedge" in gw.log(), 10.0), gw.log()
    with urllib.request.urlopen(f"{gw.url}/metrics", timeout=10) as r:
        exposition = r.read().decode()
    for name in ("sent", "won", "cancelled"):
        assert f'gatewayd_hedges_{name}_total{{alias="fleet"}} 1.0' in exposition, name


def test_a_key_at_its_limit_is_not_hedged(gateway: GatewayFactory, quick: FakeUpstream) -> None:
    with FakeUpstream(default=Stream(first_byte_delay=1.5), content="from slow") as slow:
        config = {
            "model_list": [
                openai_entry("fleet", slow, "m", weight=1000000),
                openai_entry("fleet", quick, "m", weight=0.000001),
            ],
            "general_settings": {"hedge": {"after_ms": 200, "budget_percent": 100}},
            "keys": [{"name": "team", "key": "sk-team-key-1", "rpm": 2}],
        }
        gw = gateway(config)
        client = sdk(gw.base_url, key="sk-team-key-1")

        def ask() -> str:
            stream = client.chat.completions.create(
                model="fleet", messages=[{"role": "user", "content": "Hi"}], stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        assert ask() == "from quick"  # one request of two left: hedged
        assert ask() == "from slow"  # the last of the key's minute: no copy sent
        assert quick.count("/chat/completions") == 1
        assert slow.count("/chat/completions") == 2
