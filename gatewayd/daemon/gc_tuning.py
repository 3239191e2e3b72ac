"""The garbage collector, tuned for a server whose heap is mostly built at start.

After start the heap holds Twisted, the config, the routing table and their providers:
hundreds of thousands of objects that live as long as the process. CPython's full
collection walks all of them, and it runs every few hundred requests' worth of
allocations: a pause of tens of milliseconds that every request in flight waits for (the
p99 of a saturated gateway). :func:`freeze_startup_heap` moves what is alive once the
service is built into the permanent generation, which collections skip (``gc.freeze``);
what requests allocate is collected as before. See docs/performance.md ("Latency under
load").
"""

from __future__ import annotations

import gc

#: Allocations between young collections: CPython's 700 runs one every request or two;
#: a request allocates a few thousand objects that die with it.
YOUNG_THRESHOLD = 10_000


def freeze_startup_heap() -> None:
    """Collect once, then exclude everything alive from later collections.

    Call once, when the service is built and before it serves. Not at reloads: what is
    frozen is never collected by the cycle collector. The frozen first table is still
    freed by reference counting when a reload replaces it (it holds no cycles), but
    whatever else is alive at a freeze (requests in flight) would keep its cycles."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
