"""Two indexes that make a pick cost O(log n) in the deployments of an alias.

Both are updated when a deployment's state changes (a cooldown, a slot taken or
freed), never rebuilt per request.
"""

from __future__ import annotations

import heapq
import random


class SumTree:
    """Non-negative values at fixed positions, with their running sums in a binary tree:
    :meth:`set` and :meth:`find` are O(log n); every inner sum is recomputed from its
    two children, so setting a value back gives back exactly the same sums."""

    def __init__(self, size: int) -> None:
        cap = 1
        while cap < size:
            cap *= 2
        self._cap = cap
        self._sums = [0.0] * (2 * cap)

    @property
    def total(self) -> float:
        return self._sums[1]

    def set(self, i: int, value: float) -> None:
        j = i + self._cap
        sums = self._sums
        sums[j] = value
        j //= 2
        while j:
            sums[j] = sums[2 * j] + sums[2 * j + 1]
            j //= 2

    def find(self, x: float) -> int:
        """The position where the running sum first exceeds ``x`` (0 <= x < total): a
        weighted pick for a uniform ``x``. Never lands on a zero value, even when
        rounding puts ``x`` at the very end."""
        sums = self._sums
        j = 1
        while j < self._cap:
            left = sums[2 * j]
            if x < left or sums[2 * j + 1] <= 0.0:
                j = 2 * j
            else:
                x -= left
                j = 2 * j + 1
        return j - self._cap


class FewestFirst:
    """Positions grouped by a count (requests in flight): the group with the smallest
    count in O(log n), a position moved between groups in O(1) plus a heap push."""

    def __init__(self) -> None:
        self._key: dict[int, int] = {}  # position -> its count
        self._groups: dict[int, list[int]] = {}
        self._slot: dict[int, int] = {}  # position -> its index in its group's list
        self._heap: list[int] = []  # counts that may have a group; lazily cleaned
        self._in_heap: set[int] = set()

    def place(self, i: int, key: int | None) -> None:
        """Put position ``i`` in group ``key``; None takes it out."""
        old = self._key.get(i)
        if old == key:
            return
        if old is not None:
            group = self._groups[old]
            at = self._slot.pop(i)
            last = group.pop()
            if last != i:
                group[at] = last
                self._slot[last] = at
            del self._key[i]
        if key is None:
            return
        group = self._groups.setdefault(key, [])
        self._slot[i] = len(group)
        group.append(i)
        self._key[i] = key
        if key not in self._in_heap:
            self._in_heap.add(key)
            heapq.heappush(self._heap, key)

    def fewest(self, rng: random.Random) -> int | None:
        """A position of the smallest group, chosen at random; None when empty."""
        heap = self._heap
        while heap and not self._groups.get(heap[0]):
            self._groups.pop(heap[0], None)
            self._in_heap.discard(heapq.heappop(heap))
        if not heap:
            return None
        group = self._groups[heap[0]]
        return group[0] if len(group) == 1 else rng.choice(group)
