"""The garbage collector, tuned for a server whose heap is mostly built at start.

After start the heap holds Twisted, the config, the routing table and their providers:
hundreds of thousands of objects that live as long as the process. CPython's full
collection walks all of them, and it runs every few hundred requests' worth of
allocations: a pause of tens of milliseconds that every request in flight waits for (the
p99 of a saturated gateway). :func:`freeze_startup_heap` moves what is alive once the
service is built into the permanent generation, which collections skip (``gc.freeze``);
:func:`freeze_after_reload` does the same for a reload's new config and table.

A request leaves nothing in reference cycles (``tests/test_no_cycles.py``,
``tests/test_e2e_no_cycles.py``): what it allocates is freed by reference counting, so
the collector has almost nothing to find. What it still costs is its walk: a full
collection walks every object not frozen, which under load is every open stream's
(thousands of streams: tens of milliseconds). So full collections are made rare
(:data:`OLDEST_THRESHOLD`), the young ones run every :data:`YOUNG_THRESHOLD`
allocations (a walk of at most that many new objects: a few milliseconds), and the
middle one every second young one (:data:`MIDDLE_THRESHOLD`). See
docs/performance.md ("Garbage collection under thousands of streams").
"""

from __future__ import annotations

import gc

#: Allocations between young collections: CPython's 700 runs one every request or two;
#: a request allocates a few thousand objects that die with it.
YOUNG_THRESHOLD = 10_000
#: Young collections between collections of the middle generation (CPython's 10). A
#: collection walks about 35 ns of CPU per object: the middle generation holds what
#: survived the young collections since its last one, which during a burst of new
#: streams is most of what they allocated (10 x 10,000 objects: 35 ms; 2: 7 ms).
MIDDLE_THRESHOLD = 2
#: Middle collections between full ones (CPython's 10, which under thousands of streams
#: ran a full collection every few seconds: 73 ms of CPU at 2,048 open streams, about
#: 100 tracked objects each). CPython also waits until the objects that reached the
#: oldest generation since the last full collection are a quarter of those that were
#: there. Here a full collection comes after two billion allocations: requests leave
#: nothing in cycles for it to free.
OLDEST_THRESHOLD = 100_000

_tuned = False


def freeze_startup_heap() -> None:
    """Collect once, then exclude everything alive from later collections, and set
    the thresholds above.

    Call once, when the service is built and before it serves. What is frozen is never
    walked again; it is still freed by reference counting when nothing refers to it
    (a reload's replaced table holds no cycles)."""
    global _tuned
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLDEST_THRESHOLD)
    _tuned = True


def freeze_after_reload() -> None:
    """After a reload's swap: the young generations collected (the build's own
    garbage), then everything alive frozen, the new config and table among it.

    Requests in flight are frozen too: they hold no cycles, so reference counting frees
    them when they end. Does nothing unless :func:`freeze_startup_heap` ran (an
    embedding application's collector is left alone). A full collection is not run
    here: under load it would walk every open stream."""
    if not _tuned:
        return
    gc.collect(1)
    gc.freeze()
