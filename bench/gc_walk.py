"""What a garbage collection costs with N streams open (issue 18): the real service in
memory (``tests/test_no_cycles.py``'s scripted upstream), its start-up heap frozen as
the daemon freezes it, N streams held open, then each generation collected and timed
in CPU.

    python bench/gc_walk.py [--streams 256,2048]
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import test_no_cycles as scripted
from twisted.internet.testing import MemoryReactorClock

from gatewayd.config import parse_config
from gatewayd.daemon import gc_tuning
from gatewayd.service import GatewayService
from gatewayd.upstream import http as provider_http


def measure(n: int) -> tuple[int, list[float]]:
    agent = scripted.ScriptedAgent()
    provider_http.UpstreamAgents.agent_for = lambda self, url, tls=None: agent  # type: ignore[method-assign]
    svc = GatewayService(
        parse_config(json.dumps(scripted.CONFIG)), "tcp:0", reactor=MemoryReactorClock()
    )
    client = scripted.Client(svc)
    client.request("chat", "ok", True)
    gc_tuning.freeze_startup_heap()
    gc.disable()
    held: list[Any] = [client.send("chat", "hold", True) for _ in range(n)]
    tracked = len(gc.get_objects())
    took = []
    for gen in (0, 1, 2):
        t0 = time.process_time()
        gc.collect(gen)
        took.append((time.process_time() - t0) * 1000)
    del held
    gc.enable()
    gc.unfreeze()
    return tracked, took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="256,2048")
    args = ap.parse_args()
    print(
        "| open streams | objects walked (not frozen) | per stream | collect(0) / (1) / (2) ms CPU |"
    )
    print("|--:|--:|--:|---|")
    for n in (int(x) for x in args.streams.split(",")):
        tracked, took = measure(n)
        print(
            f"| {n} | {tracked} | {tracked / n:.0f} | "
            + " / ".join(f"{t:.1f}" for t in took)
            + " |"
        )


if __name__ == "__main__":
    main()
