"""``routing_strategy: prefix-affinity``: requests whose prompts begin alike go to the
same replica, so that the model server's prefix (KV) cache hits.

Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2017): each
deployment owns :data:`POINTS` points on a ring; a request's key is hashed onto the
ring and walks clockwise to the first deployment that is open (healthy, with room, not
yet tried) and below the load bound: ``ceil((1 + EPSILON) x (in flight + 1) / n)``
requests in flight, for the alias's ``n`` open deployments. When a replica leaves,
cools down or is full, only its keys move (to the next replica on the ring); the
others stay where their cache is.

The key, in this order: OpenAI's ``prompt_cache_key``; else ``user``; else the
beginning of the prompt, in any dialect: the system prompt (``system``,
``instructions``) and the messages up to the first user message (a conversation keeps
its key as it grows), at most :data:`PREFIX_CHARS` characters of it.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterator
from typing import Any

from gatewayd.routing.choice import PoolView

#: Points per deployment on the ring: enough for an even share (about +-10 %).
POINTS = 100
#: A replica may hold this much more than the mean load before its keys spill.
EPSILON = 0.25
#: About the first 512 tokens of a prompt (4 characters a token).
PREFIX_CHARS = 2048


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def affinity_key(body: Any) -> bytes | None:
    """The bytes a request is placed by, or None when it has none (no prompt at all)."""
    if not isinstance(body, dict):
        return None
    for field in ("prompt_cache_key", "user"):
        value = body.get(field)
        if isinstance(value, str) and value:
            return f"{field}\0{value}".encode()
    text = "".join(_prefix(body))[:PREFIX_CHARS]
    return ("prompt\0" + text).encode() if text else None


def _prefix(body: dict[str, Any]) -> Iterator[str]:
    """The prompt's beginning as text pieces: system prompt, then messages through the
    first user message (chat, Messages, Responses), or a completions prompt."""
    for field in ("system", "instructions"):
        yield from _texts(body.get(field), "system")
    for field in ("messages", "input", "prompt"):
        items = body.get(field)
        if isinstance(items, str):
            yield from _texts(items, "user")
            return
        if not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, str):  # a list of prompts (completions, embeddings)
                yield from _texts(item, "user")
                return
            if not isinstance(item, dict):
                continue
            role = item.get("role") if isinstance(item.get("role"), str) else "user"
            yield from _texts(item.get("content"), str(role))
            if role == "user":
                return


def _texts(content: Any, role: str) -> Iterator[str]:
    if isinstance(content, str):
        if content:
            yield f"{role}\0{content}\0"
        return
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield f"{role}\0{part}\0"
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                yield f"{role}\0{part['text']}\0"


class Ring:
    """The hash ring of one alias's deployments (built once per routing table)."""

    def __init__(self, ids: list[str], points: int = POINTS) -> None:
        ring = sorted(
            (_hash(f"{dep}\0{k}".encode()), i) for i, dep in enumerate(ids) for k in range(points)
        )
        self._points = [p for p, _ in ring]
        self._owners = [i for _, i in ring]
        self.size = len(ids)

    def walk(self, key: bytes) -> Iterator[int]:
        """The deployments' positions clockwise from ``key``'s point, each once."""
        n = len(self._points)
        start = bisect.bisect(self._points, _hash(key))
        seen: set[int] = set()
        for k in range(n):
            i = self._owners[(start + k) % n]
            if i not in seen:
                seen.add(i)
                yield i
                if len(seen) == self.size:
                    return


class AffinityChooser:
    """Picks for one alias by :func:`affinity_key` on its :class:`Ring`."""

    def __init__(self, ids: list[str], epsilon: float = EPSILON) -> None:
        self.ring = Ring(ids)
        self.epsilon = epsilon

    #: The pool keeps the alias's total in flight for :meth:`bound` (O(1)).
    needs_loads = True

    def bound(self, pool: PoolView) -> int:
        """The most requests in flight an open deployment may have to take one more:
        ``ceil((1 + epsilon) x (in flight + 1) / open deployments)``."""
        n = max(pool.open_count, 1)
        return math.ceil((1.0 + self.epsilon) * (pool.total_in_flight + 1) / n)

    def choose(self, pool: PoolView, rng: random.Random, request: Any) -> int | None:
        key = affinity_key(getattr(request, "body", None))
        if key is None:
            return pool.random_open(rng)
        bound = self.bound(pool)
        first_open = None
        for i in self.ring.walk(key):
            if not pool.is_open(i):
                continue
            if pool.in_flight(i) < bound:
                return i
            if first_open is None:
                first_open = i
        return first_open  # (not reached while the bound holds: some open one is below it)
