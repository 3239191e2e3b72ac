"""The files through which worker processes share their metric values (``--workers N``).

One directory (``PROMETHEUS_MULTIPROC_DIR``) holds:

- ``keys``: every series any process created, one JSON line each, appended under an
  ``flock``: ``[kind, slot, width, name, labels, created]``. The slot numbers are shared:
  a series has the same slots in every process's files, so a scrape adds files slot by
  slot, without looking a key up per sample (prometheus_client parses the JSON key of
  every sample of every file at every scrape).
- per process and kind, ``{kind}_{pid}_{token}.f64``: an array of doubles, mmap'd
  (``MAP_SHARED``) and written in place: a counter's update is one ``view[slot] += x``.
  Kinds: ``sum`` (counters and histograms, summed over every process that ever lived),
  ``max`` (the last reload time: the maximum over all), ``livesum`` and ``livemax``
  (gauges read from callbacks: over live processes only).
- per live process, ``gauge_livesum_{pid}.db``, empty: the process is alive while it
  exists. It is named as prometheus_client names a process's live-gauge file, so
  ``prometheus_client.multiprocess.mark_process_dead(pid)`` (what a supervisor calls
  when a worker died) retires it too.

Files only grow (``ftruncate`` up, mapped again): a reader's mapping never loses pages
under it. A gauge takes two slots, (present, value): a label set no live process has
leaves the sum, as with prometheus_client.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mmap
import os
import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["sum", "max", "livesum", "livemax"]
KINDS: tuple[Kind, ...] = ("sum", "max", "livesum", "livemax")
LIVE_KINDS = frozenset({"livesum", "livemax"})
#: Slots a new values file starts with (sparse: pages cost nothing until written).
_INITIAL_SLOTS = 8192
KEYS = "keys"
SUFFIX = ".f64"


def marker_name(pid: int) -> str:
    """The file that says ``pid`` is alive (prometheus_client's live-gauge file name)."""
    return f"gauge_livesum_{pid}.db"


@dataclass(frozen=True)
class Record:
    """One series in the shared layout."""

    kind: Kind
    slot: int
    width: int
    name: str
    labels: tuple[str, ...]
    created: float


class Layout:
    """The ``keys`` file: which series has which slots. Read incrementally (each line is
    parsed once per process); new series are appended under an exclusive ``flock``."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, KEYS)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.offset = 0
        self.records: list[Record] = []
        self.index: dict[tuple[Kind, str, tuple[str, ...]], int] = {}
        self.size: dict[Kind, int] = dict.fromkeys(KINDS, 0)
        self._tail = b""  # the start of a line not yet complete

    def refresh(self) -> int:
        """Parse the lines appended since the last call; the number of new records."""
        before = len(self.records)
        while True:
            chunk = os.pread(self.fd, 1 << 20, self.offset)
            if not chunk:
                break
            self.offset += len(chunk)
            lines = (self._tail + chunk).split(b"\n")
            self._tail = lines.pop()
            for line in lines:
                self._parse(line)
        return len(self.records) - before

    def _parse(self, line: bytes) -> None:
        try:
            kind, slot, width, name, labels, created = json.loads(line)
            key = (kind, name, tuple(labels))
            if kind not in self.size or key in self.index:
                return
        except (ValueError, TypeError):
            return  # a line torn by a process killed while writing it: no series
        self.index[key] = slot
        self.records.append(Record(kind, slot, width, name, key[2], created))
        self.size[kind] = max(self.size[kind], slot + width)

    def allocate(self, kind: Kind, name: str, labels: tuple[str, ...], width: int) -> int:
        """The first slot of the series (kind, name, labels), appended if it is new."""
        slot = self.index.get((kind, name, labels))
        return slot if slot is not None else self.allocate_many([(kind, name, labels, width)])[0]

    def allocate_many(self, series: Sequence[tuple[Kind, str, tuple[str, ...], int]]) -> list[int]:
        """:meth:`allocate` for many, under one lock and in one write."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            self.refresh()
            lines, ends = [], dict(self.size)
            now = time.time()
            for kind, name, labels, width in series:
                if (kind, name, labels) not in self.index:
                    lines.append(json.dumps([kind, ends[kind], width, name, labels, now]))
                    ends[kind] += width
            if lines:
                # Under the lock nobody writes: an incomplete last line is a dead
                # writer's, ended here so that it cannot swallow ours.
                text = "\n".join(lines).encode() + b"\n"
                os.write(self.fd, (b"\n" if self._tail else b"") + text)
                self.refresh()
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        return [self.index[(kind, name, labels)] for kind, name, labels, _ in series]

    def close(self) -> None:
        os.close(self.fd)


class ValueFile:
    """One process's doubles of one kind. ``view(end)`` is a memoryview covering slots
    ``[0, end)``: the file grows by doubling, and each growth is a new mapping (the old
    ones stay valid, and are kept: the series made before hold views of them)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.capacity = 0
        self._maps: list[mmap.mmap] = []
        self._view: memoryview[float] | None = None
        self._grow(_INITIAL_SLOTS)

    def _grow(self, slots: int) -> None:
        os.ftruncate(self.fd, slots * 8)
        m = mmap.mmap(self.fd, slots * 8)
        self._maps.append(m)
        self._view = memoryview(m).cast("d")
        self.capacity = slots

    def view(self, end: int) -> memoryview[float]:
        if end > self.capacity:
            self._grow(max(2 * self.capacity, end + _INITIAL_SLOTS))
        assert self._view is not None
        return self._view


class SharedCounter:
    """A counter series whose value lives in the shared file."""

    __slots__ = ("slot", "view")

    def __init__(self, view: memoryview[float], slot: int) -> None:
        self.view = view
        self.slot = slot

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.view[self.slot] += amount


class SharedHistogram:
    """A histogram series: per-bucket counts (not cumulative), then the sum."""

    __slots__ = ("base", "bounds", "total", "view")

    def __init__(self, view: memoryview[float], slot: int, bounds: tuple[float, ...]) -> None:
        self.view = view
        self.base = slot
        self.bounds = bounds
        self.total = slot + len(bounds)

    def observe(self, value: float) -> None:
        view = self.view
        view[self.base + bisect_left(self.bounds, value)] += 1.0
        view[self.total] += value


class SharedGauge:
    """A gauge series: (present, value)."""

    __slots__ = ("slot", "view")

    def __init__(self, view: memoryview[float], slot: int) -> None:
        self.view = view
        self.slot = slot
        view[slot] = 1.0

    def set(self, value: float) -> None:
        self.view[self.slot + 1] = float(value)


class SharedStore:
    """This process's side of the directory: its marker, its value files, new series.

    ``pid`` is this process's (tests pass others, to play several workers in one)."""

    def __init__(self, directory: str, pid: int | None = None) -> None:
        self.directory = directory
        self.pid = os.getpid() if pid is None else pid
        self.layout = Layout(directory)
        # A dead process that had this pid left its live files: not ours, and stale.
        forget_process(directory, self.pid)
        # The marker first: a reader that sees our files without it takes us for dead
        # (and would cache our counters as final).
        with open(os.path.join(directory, marker_name(self.pid)), "ab"):
            pass
        token = os.urandom(4).hex()
        self.files = {
            k: ValueFile(os.path.join(directory, f"{k}_{self.pid}_{token}{SUFFIX}")) for k in KINDS
        }

    def _slot(
        self, kind: Kind, name: str, labels: Sequence[str], width: int
    ) -> tuple[memoryview[float], int]:
        slot = self.layout.allocate(kind, name, tuple(labels), width)
        return self.files[kind].view(slot + width), slot

    def counter(self, name: str, labels: Sequence[str]) -> SharedCounter:
        return SharedCounter(*self._slot("sum", name, labels, 1))

    def histogram(
        self, name: str, labels: Sequence[str], bounds: tuple[float, ...]
    ) -> SharedHistogram:
        view, slot = self._slot("sum", name, labels, len(bounds) + 1)
        return SharedHistogram(view, slot, bounds)

    def gauge(self, kind: Kind, name: str, labels: Sequence[str]) -> SharedGauge:
        return SharedGauge(*self._slot(kind, name, labels, 2))

    def gauges(self, kind: Kind, name: str, labels: Sequence[tuple[str, ...]]) -> list[SharedGauge]:
        """:meth:`gauge` for many label sets at once (a refresh after a reload)."""
        slots = self.layout.allocate_many([(kind, name, ls, 2) for ls in labels])
        view = self.files[kind].view(max(slots, default=0) + 2)
        return [SharedGauge(view, slot) for slot in slots]


@dataclass
class ProcessFiles:
    """What a directory listing says of one process."""

    pid: int
    alive: bool
    files: dict[Kind, str]


def list_processes(directory: str) -> list[ProcessFiles]:
    """Every process that has (or had) value files in ``directory``, by file name."""
    names = os.listdir(directory)
    live = {n for n in names if n.startswith("gauge_livesum_") and n.endswith(".db")}
    found: dict[str, ProcessFiles] = {}
    for n in names:
        if not n.endswith(SUFFIX):
            continue
        parts = n[: -len(SUFFIX)].split("_")
        if len(parts) != 3 or parts[0] not in KINDS or not parts[1].isdigit():
            continue
        kind, pid, token = parts
        p = found.get(pid + "_" + token)
        if p is None:
            p = found[pid + "_" + token] = ProcessFiles(int(pid), marker_name(int(pid)) in live, {})
        p.files[kind] = os.path.join(directory, n)  # type: ignore[index]
    return list(found.values())


def forget_process(directory: str, pid: int) -> None:
    """``pid`` is dead: its live gauges leave the sum (its counters stay counted)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, marker_name(pid)))
    for p in list_processes(directory):
        if p.pid == pid:
            for kind in LIVE_KINDS:
                with contextlib.suppress(FileNotFoundError, KeyError):
                    os.remove(p.files[kind])  # type: ignore[index]


_STORES: dict[tuple[str, int], SharedStore] = {}


def process_store(directory: str) -> SharedStore:
    """This process's one store for ``directory`` (every GatewayMetrics of it shares it:
    one marker and one set of files per process, as prometheus_client has)."""
    key = (os.path.abspath(directory), os.getpid())
    store = _STORES.get(key)
    if store is None:
        store = _STORES[key] = SharedStore(directory)
    return store
