"""The fleet strategies end to end: the real daemon in front of three fake replicas."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import GatewayFactory, openai_entry, sdk

from gatewayd.testing import FakeUpstream, Reply


@pytest.fixture
def replicas() -> Iterator[list[FakeUpstream]]:
    with FakeUpstream() as a, FakeUpstream() as b, FakeUpstream() as c:
        yield [a, b, c]


def fleet(replicas: list[FakeUpstream], strategy: str) -> dict[str, Any]:
    return {
        "model_list": [
            {**openai_entry("fleet", r, "m"), "model_info": {"id": f"r{i}"}}
            for i, r in enumerate(replicas)
        ],
        "general_settings": {"routing_strategy": strategy},
    }


def test_prefix_affinity_keeps_each_conversation_on_one_replica(
    gateway: GatewayFactory, replicas: list[FakeUpstream]
) -> None:
    gw = gateway(fleet(replicas, "prefix-affinity"))
    client = sdk(gw.base_url)
    homes: dict[int, set[str]] = {}
    for turn in range(3):
        for family in range(12):
            messages: list[Any] = [
                {"role": "system", "content": "You answer questions about invoices."},
                {"role": "user", "content": f"Customer {family}: where is my refund?"},
            ]
            for t in range(turn):
                messages += [
                    {"role": "assistant", "content": f"reply {t}"},
                    {"role": "user", "content": f"and then {t}?"},
                ]
            raw = client.chat.completions.with_raw_response.create(model="fleet", messages=messages)
            homes.setdefault(family, set()).add(raw.headers["x-gatewayd-deployment"])
    assert all(len(h) == 1 for h in homes.values()), homes
    assert len({next(iter(h)) for h in homes.values()}) >= 2  # families spread


def test_latency_based_routing_moves_off_a_slow_replica(
    gateway: GatewayFactory, replicas: list[FakeUpstream]
) -> None:
    replicas[2].set_default(Reply(delay=0.5))
    gw = gateway(fleet(replicas, "latency-based-routing"))
    client = sdk(gw.base_url)
    served: list[str] = []
    for _ in range(40):
        raw = client.chat.completions.with_raw_response.create(
            model="fleet", messages=[{"role": "user", "content": "Hi"}]
        )
        served.append(raw.headers["x-gatewayd-deployment"])
    # A new replica is tried (scored at the median until measured), then left alone;
    # a fast one that has a hiccup on a busy machine may lose a pick to it now and then.
    assert Counter(served)["r2"] <= 6, served
    assert Counter(served[20:])["r2"] <= 2, served
    with urllib.request.urlopen(f"{gw.url}/health", timeout=10) as r:
        deps = json.loads(r.read())["models"]["fleet"]["deployments"]
    slow = next(d for d in deps if d["id"] == "r2")
    fast = next(d for d in deps if d["id"] == "r0")
    assert slow["latency_per_token_s"] > fast["latency_per_token_s"]
