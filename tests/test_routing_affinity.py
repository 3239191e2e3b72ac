"""``routing_strategy: prefix-affinity``: a prompt family stays on one replica, spills
past the load bound, and few keys move when a replica leaves, joins or cools down."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

from fleet_harness import Fleet, config

from gatewayd.providers.base import Endpoint, ProviderRequest
from gatewayd.routing.affinity import EPSILON, AffinityChooser, Ring, affinity_key

SYSTEM = "You are a careful assistant for the billing team. " * 5


def chat(family: int, turn: int) -> dict[str, Any]:
    """Turn ``turn`` of conversation ``family``: the same start, a growing tail."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Question {family}: why was I charged twice?"},
    ]
    for t in range(turn):
        messages += [
            {"role": "assistant", "content": f"answer {t}"},
            {"role": "user", "content": f"follow-up {t}"},
        ]
    return {"model": "fleet", "messages": messages}


def test_the_key_in_every_dialect() -> None:
    # A conversation keeps its key as it grows.
    assert affinity_key(chat(1, 0)) == affinity_key(chat(1, 3))
    assert affinity_key(chat(1, 0)) != affinity_key(chat(2, 0))
    # The client's own key wins, then user.
    pck = {"prompt_cache_key": "tenant-9", "user": "u", "messages": [{"role": "user"}]}
    assert affinity_key(pck) == b"prompt_cache_key\0tenant-9"
    assert affinity_key({"user": "alice", "messages": []}) == b"user\0alice"
    # Messages: a top-level system prompt, content blocks.
    messages = {
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }
    same_as_blocks = {
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
    }
    assert affinity_key(messages) == affinity_key(same_as_blocks)
    # Responses: instructions and input, as a string or as items.
    responses = {"instructions": "Be brief.", "input": "Hi"}
    items = {
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
    }
    assert affinity_key(responses) == affinity_key(items) is not None
    # Completions, embeddings.
    assert affinity_key({"prompt": ["Once upon", "x"]}) == affinity_key({"prompt": "Once upon"})
    assert affinity_key({"model": "m"}) is None
    # Only the beginning counts.
    long_a = {"messages": [{"role": "user", "content": "x" * 5000 + "a"}]}
    long_b = {"messages": [{"role": "user", "content": "x" * 5000 + "b"}]}
    assert affinity_key(long_a) == affinity_key(long_b)


def test_a_prompt_family_stays_on_one_replica() -> None:
    fleet = Fleet(config("prefix-affinity", n=4), {})
    homes: dict[int, set[str]] = {}
    for turn in range(5):
        for family in range(40):
            got = fleet.run(0.1, body=chat(family, turn))
            homes.setdefault(family, set()).update(got)
    assert all(len(h) == 1 for h in homes.values()), homes
    spread = Counter(next(iter(h)) for h in homes.values())
    assert len(spread) == 4 and min(spread.values()) >= 4, spread


def test_a_family_spills_past_the_load_bound() -> None:
    fleet = Fleet(config("prefix-affinity", n=4), {f"r{i}": 5.0 for i in range(4)})
    request = ProviderRequest(Endpoint.CHAT, chat(7, 0))
    home = None
    for sent in range(1, 13):
        fleet.router.route("fleet", request).addErrback(lambda f: None)
        load = {r: fleet.router.health.get(r).in_flight for r in fleet.providers}
        if home is None:
            home = max(load, key=lambda r: load[r])
        # No replica above (1 + epsilon) x the mean, rounded up.
        assert max(load.values()) <= math.ceil((1 + EPSILON) * sent / 4), load
    assert home is not None
    assert load[home] == max(load.values()) and sum(load.values()) == 12
    assert sum(1 for v in load.values() if v) >= 3  # it spilled
    fleet.clock.advance(6.0)


class View:
    """A pool seen by a chooser: ``n`` deployments, some closed."""

    def __init__(self, n: int, closed: frozenset[int] = frozenset()) -> None:
        self.routes: list[Any] = [None] * n
        self.closed = closed
        self.total_in_flight = 0

    @property
    def open_count(self) -> int:
        return len(self.routes) - len(self.closed)

    def is_open(self, i: int) -> bool:
        return i not in self.closed

    def in_flight(self, i: int) -> int:
        return 0

    def random_open(self, rng: random.Random, but: int | None = None) -> int | None:
        return rng.choice([i for i in range(len(self.routes)) if self.is_open(i) and i != but])


def test_few_keys_move_when_a_replica_leaves_cools_down_or_joins() -> None:
    ids = [f"vllm-{i}" for i in range(5)]
    keys = [f"user\0customer-{k}".encode() for k in range(2000)]
    rng = random.Random(3)
    chooser = AffinityChooser(ids)

    def place(c: AffinityChooser, view: View) -> list[str]:
        out = []
        for k in keys:
            i = next(j for j in c.ring.walk(k) if view.is_open(j))
            out.append(ids[i])
        return out

    before = place(chooser, View(5))
    share = Counter(before)
    assert min(share.values()) > 0.12 * len(keys), share  # even-ish: 20 % each
    # vllm-2 cools down: only its keys move.
    during = place(chooser, View(5, frozenset({2})))
    moved = [k for k, (a, b) in enumerate(zip(before, during, strict=True)) if a != b]
    assert all(before[k] == "vllm-2" for k in moved)
    assert len(moved) == share["vllm-2"]
    # A sixth replica joins: about a sixth of the keys move, all of them to it.
    grown = [*ids, "vllm-5"]
    joined = AffinityChooser(grown)
    after = []
    for k in keys:
        i = next(iter(joined.ring.walk(k)))
        after.append(grown[i])
    moved_to = Counter(b for a, b in zip(before, after, strict=True) if a != b)
    assert set(moved_to) == {"vllm-5"}
    assert 0.08 * len(keys) < moved_to["vllm-5"] < 0.26 * len(keys)
    # The chooser itself, on a request with no prompt: any open one.
    assert chooser.choose(View(5, frozenset({0, 1, 2, 3})), rng, None) == 4


def test_ring_walk_visits_each_deployment_once() -> None:
    ring = Ring(["a", "b", "c"])
    assert sorted(ring.walk(b"k")) == [0, 1, 2]


def test_a_cooled_down_replica_gets_its_family_back() -> None:
    fleet = Fleet(config("prefix-affinity", n=3), {})
    home = next(iter(fleet.run(0.1, body=chat(3, 0))))
    fleet.providers[home].fail_next = 4  # four transient failures: a 30 s cooldown
    for _ in range(4):
        fleet.run(0.1, body=chat(3, 0))
    assert fleet.router.health.is_cooling(home)
    elsewhere = fleet.run(1.0, body=chat(3, 0))
    assert home not in elsewhere and len(elsewhere) == 1  # one stand-in, not a scatter
    fleet.clock.advance(31.0)
    assert set(fleet.run(1.0, body=chat(3, 1))) == {home}
