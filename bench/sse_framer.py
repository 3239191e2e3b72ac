"""CPU time of framing one huge SSE event with no newline, fed in 64 KiB reads
(the framer must be linear: twice the size, twice the time).

    python bench/sse_framer.py
"""

from __future__ import annotations

import time

from gatewayd.upstream.sse import SSEFramer

READ = b"x" * 65536


def frame(size: int) -> float:
    framer = SSEFramer(max_event=size + 1)
    start = time.process_time()
    for _ in range(size // len(READ)):
        framer.feed(READ)
    assert len(framer.feed(b"\n\n")) == 1
    return time.process_time() - start


def main() -> None:
    for mib in (4, 8, 16):
        print(f"{mib:3d} MiB event: {frame(mib << 20):.3f} s CPU")


if __name__ == "__main__":
    main()
