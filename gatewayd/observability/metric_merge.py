"""A scrape with ``--workers N``: every process's shared files (:mod:`gatewayd.observability.metric_share`)
summed into the render families of :mod:`gatewayd.observability.metric_store`.

Per kind of file, the merged values are one list of floats, in the shared slot order.
At a scrape each process's file is copied (one ``memcpy``) and compared with its copy
from the scrape before (``memcmp``: whole, then by 128 slots, then by 16); only the
blocks that changed in some file are added up again, the slots whose sums changed are
found in C, and only their series are updated (and so rendered again). An idle scrape
is a copy and a compare per file and the cached text, as in one process. A dead
process's counters are added into a base once and its files no longer read.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Callable, Iterable
from itertools import compress
from operator import add, ne
from typing import Any

from gatewayd.observability.metric_share import (
    KINDS,
    LIVE_KINDS,
    Kind,
    Record,
    SharedStore,
    list_processes,
)
from gatewayd.observability.metric_store import (
    CounterFamily,
    CounterSeries,
    HistogramFamily,
    HistogramSeries,
    Labels,
    Sample,
)

#: Slots compared at once, then (where they differ) in blocks of BLOCK: a block is what
#: is added up again, and the series on it compared with what they hold.
PAGE = 128
BLOCK = 16
#: Copies a series' merged values from the list (at its first slot) into the series.
Puller = Callable[[Any, list[float], int], None]
Owner = tuple[Any, int, Puller]
_PAGE_BYTES, _BLOCK_BYTES = PAGE * 8, BLOCK * 8


class _Source:
    """One process's file of one kind, mapped read-only, and its copy at the last scrape."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.map: mmap.mmap | None = None
        self.copy = b""

    def read(self, n: int) -> bytes:
        """Slots ``[0, n)`` as bytes (zeros past the end of the file)."""
        need = n * 8
        if self.map is None or len(self.map) < need:
            size = os.fstat(self.fd).st_size
            if size and (self.map is None or size > len(self.map)):
                if self.map is not None:
                    self.map.close()
                self.map = mmap.mmap(self.fd, size, prot=mmap.PROT_READ)
        have = min(need, len(self.map)) if self.map is not None else 0
        data = self.map[:have] if self.map is not None else b""
        return data + bytes(need - have) if have < need else data

    def close(self) -> None:
        if self.map is not None:
            self.map.close()
        os.close(self.fd)


def _blocks(old: bytes, new: bytes, into: set[int]) -> None:
    """The blocks where ``old`` and ``new`` (as long as each other) differ."""
    if old == new:
        return
    for start in range(0, len(new), _PAGE_BYTES):
        end = start + _PAGE_BYTES
        if old[start:end] != new[start:end]:
            for b in range(start, min(end, len(new)), _BLOCK_BYTES):
                if old[b : b + _BLOCK_BYTES] != new[b : b + _BLOCK_BYTES]:
                    into.add(b // _BLOCK_BYTES)


class _KindMerge:
    """The merged values of one kind, and the series each slot belongs to."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.live_only = kind in LIVE_KINDS
        self.combine: Callable[[float, float], float] = add if kind.endswith("sum") else max
        self.values: list[float] = []
        #: Per slot: (series, its first slot, puller) of the series it belongs to.
        self.owners: list[Owner | None] = []
        self.sources: dict[str, _Source] = {}
        self.base: list[float] = []  # dead processes' values (sum and max kinds)
        self.folded: set[str] = set()

    def _add_up(self, changed: set[int], n: int) -> list[Owner]:
        """Recompute the merged values of the changed blocks, run by run; the series
        whose values changed."""
        slots: list[int] = []
        views: list[memoryview[float]] = [
            memoryview(s.copy).cast("d") for s in self.sources.values()
        ]
        base = self.base if self.folded and not self.live_only else None
        blocks = sorted(changed)
        i = 0
        while i < len(blocks):
            j = i
            while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1:
                j += 1
            a, b = blocks[i] * BLOCK, min(n, (blocks[j] + 1) * BLOCK)
            i = j + 1
            parts: list[list[float]] = [v[a:b].tolist() for v in views]  # type: ignore[misc]
            if base is not None:
                parts.append(base[a:b])
            acc = parts[0] if parts else [0.0] * (b - a)
            for part in parts[1:]:
                acc = list(map(self.combine, acc, part))
            old = self.values[a:b]
            if acc != old:
                slots += compress(range(a, b), map(ne, acc, old))
                self.values[a:b] = acc
        # C-level: slot -> its series, each once.
        return [o for o in dict.fromkeys(map(self.owners.__getitem__, slots)) if o is not None]

    def grow(self, n: int) -> None:
        """Room for ``n`` slots (new ones at 0)."""
        if len(self.values) < n:
            self.values += [0.0] * (n - len(self.values))
            self.base += [0.0] * (n - len(self.base))
            self.owners += [None] * (n - len(self.owners))

    def merge(self, n: int, alive: Iterable[str], dead: Iterable[str]) -> list[Owner]:
        """Bring the values up to date with the files; the series whose values changed."""
        self.grow(n)
        changed: set[int] = set()
        zeros = bytes(n * 8)
        seen = set()
        for path in alive:
            seen.add(path)
            source = self.sources.get(path)
            if source is None:
                try:
                    source = self.sources[path] = _Source(path)
                except FileNotFoundError:
                    continue
            old = source.copy + bytes(n * 8 - len(source.copy))
            source.copy = source.read(n)
            _blocks(old, source.copy, changed)
        for path in dead:
            if path in self.folded:
                continue
            seen.add(path)
            source = self.sources.pop(path, None)
            if self.live_only:  # a dead process's gauges leave the sum
                if source is not None:
                    _blocks(source.copy + bytes(n * 8 - len(source.copy)), zeros, changed)
                    source.close()
                continue
            # Its counters stay: into the base, once (a dead process writes no more).
            if source is None:
                with contextlib.suppress(FileNotFoundError):
                    source = _Source(path)
            if source is not None:
                final = source.read(n)
                _blocks(source.copy + bytes(n * 8 - len(source.copy)), final, changed)
                self.base = list(map(self.combine, self.base, memoryview(final).cast("d")))
                source.close()
            self.folded.add(path)
        for path in self.sources.keys() - seen:  # its file went: so do its values
            source = self.sources.pop(path)
            _blocks(source.copy + bytes(n * 8 - len(source.copy)), zeros, changed)
            source.close()
        return self._add_up(changed, n) if changed else []

    def own(self, series: object, slot: int, width: int, pull: Puller) -> Owner:
        owner = (series, slot, pull)
        self.owners[slot : slot + width] = [owner] * width
        return owner


def _pull_counter(series: CounterSeries, values: list[float], slot: int) -> None:
    v = values[slot]
    if v != series.value:
        series.value = v
        series.text = None
        series.family.dirty = True


def _pull_histogram(series: HistogramSeries, values: list[float], slot: int) -> None:
    nb = len(series.bounds)
    counts = values[slot : slot + nb]
    total = values[slot + nb]
    if counts != series.counts or total != series.sum:
        series.counts = counts
        series.sum = total
        series.text = None
        series.family.dirty = True


class Merger:
    """Keeps render families equal to the sum over every process's files."""

    def __init__(self, store: SharedStore) -> None:
        self.store = store
        self.kinds = {k: _KindMerge(k) for k in KINDS}
        self._families: dict[str, CounterFamily | HistogramFamily] = {}
        self._gauges: dict[str, list[tuple[Labels, int]]] = {}
        self._cursor = 0
        self._fresh: list[tuple[object, int, Puller, Kind]] = []

    def counter(self, name: str, family: CounterFamily) -> None:
        self._families[name] = family

    def histogram(self, name: str, family: HistogramFamily) -> None:
        self._families[name] = family

    def gauge(self, kind: Kind, name: str) -> Callable[[], list[Sample]]:
        """The ``read`` of a :class:`GaugeFamily`: the merged (present) label sets."""
        entries = self._gauges.setdefault(name, [])
        values = self.kinds[kind]

        def read() -> list[Sample]:
            v = values.values
            return [(labels, v[s + 1]) for labels, s in entries if v[s]]

        return read

    def _bind(self, record: Record) -> tuple[object, Puller] | None:
        gauge = self._gauges.get(record.name)
        if gauge is not None:
            gauge.append((record.labels, record.slot))
            return None
        family = self._families.get(record.name)
        if family is None:
            return None  # a series this process does not declare (another version)
        old = family.series.get(record.labels)
        if old is not None and old.created != record.created:  # made at start: unlabelled
            del family.series[record.labels]
        series = family.child(record.labels, record.created)
        if isinstance(series, HistogramSeries):
            return series, _pull_histogram
        return series, _pull_counter

    def catch_up(self) -> None:
        """Parse the keys appended since, and make their series (cheap when none are
        new: the reactor-lag tick calls it, so that a scrape rarely has many to make)."""
        layout = self.store.layout
        layout.refresh()
        for k in KINDS:
            self.kinds[k].grow(layout.size[k])  # room for the new series' slots
        for record in layout.records[self._cursor :]:
            bound = self._bind(record)
            if bound is not None:
                series, pull = bound
                self.kinds[record.kind].own(series, record.slot, record.width, pull)
                self._fresh.append((series, record.slot, pull, record.kind))
        self._cursor = len(layout.records)

    def update(self) -> None:
        """Read every process's files into the families (call before rendering)."""
        self.catch_up()
        sizes = self.store.layout.size
        alive: dict[Kind, list[str]] = {k: [] for k in KINDS}
        dead: dict[Kind, list[str]] = {k: [] for k in KINDS}
        for proc in list_processes(self.store.directory):
            for kind, path in proc.files.items():
                (alive if proc.alive else dead)[kind].append(path)
        for k, merge in self.kinds.items():
            changed = merge.merge(sizes[k], alive[k], dead[k])
            values = merge.values
            for series, slot, pull in changed:
                pull(series, values, slot)
        # Series made since the last update: their slots may have changed before.
        for series, slot, pull, k in self._fresh:
            pull(series, self.kinds[k].values, slot)
        self._fresh = []
