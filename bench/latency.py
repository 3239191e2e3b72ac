"""p50 and p99 of a saturated gateway, with and without scrapes and a reload, and what
the garbage collector does meanwhile; prints a markdown table.

    sudo apt-get install -y nginx wrk          # once (Debian/Ubuntu packages)
    python bench/latency.py [--duration 10] [--deployments 1000] [--variants default,tuned]

The same upstream (nginx with a fixed answer), client (wrk, ``--connections`` 8) and
pinning as ``bench/compare.py``. The gateway's config is compare.py's plus
``--deployments`` mock deployments (``--per-alias`` per alias), each sent a few requests
first, so that ``/metrics`` and ``/health`` are as large as in a big installation. Phases,
each ``--duration`` seconds of non-streamed requests:

- ``plain``: wrk alone;
- ``scrape``: the same while ``/metrics`` and ``/health`` are fetched every second;
- ``reload``: the config is reloaded (SIGHUP) twice, a third and two thirds of the way in;
- ``scrape+reload``: both.

Variants (``--variants``) of the gateway's garbage collection, the same code otherwise:
``default`` (CPython's settings, as before gatewayd.daemon.gc_tuning), ``freeze`` (only ``gc.freeze``
after start) and ``tuned`` (what gatewayd does: :mod:`gatewayd.daemon.gc_tuning`). The gateway runs
under a wrapper that records every collection's pause per generation (``gc.callbacks``)
and reports the phase's counts, the longest pause and the total; it also reports the
longest reactor stall (how late a call scheduled every 5 ms fired) and each reload's
duration (from the SIGHUP's call in the reactor to the new config in force).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from compare import bodies, config
from harness import MASTER_KEY, Load, Proc, start_nginx, wait_http, wrk

from gatewayd.testing import free_port

#: Runs twistd with the chosen GC variant; SIGUSR2 writes the GC stats since the last
#: SIGUSR2 to BENCH_GC_LOG and starts counting again.
WRAPPER = r"""
import gc, json, os, signal, sys, time
variant, log = os.environ["BENCH_GC"], os.environ["BENCH_GC_LOG"]
stats, began, extra = {}, [0.0], {}
def reset():
    stats.clear()
    stats.update({g: [0, 0.0, 0.0] for g in ("0", "1", "2")})
    extra.clear()
    extra.update({"stall": 0.0, "reloads": []})
reset()
def timed(phase, info):
    if phase == "start":
        began[0] = time.perf_counter()
        return
    took = time.perf_counter() - began[0]
    s = stats[str(info["generation"])]
    s[0] += 1; s[1] += took; s[2] = max(s[2], took)
gc.callbacks.append(timed)
def dump(signum, frame):
    with open(log, "w") as f:
        json.dump({**stats, **extra}, f)
    reset()
signal.signal(signal.SIGUSR2, dump)
# The longest reactor stall: how late a call every PROBE seconds fires.
PROBE = 0.005
from gatewayd import service
start_service, reload = service.GatewayService.startService, service.GatewayService.reload
def probe(clock, due):
    extra["stall"] = max(extra["stall"], clock.seconds() - due)
    clock.callLater(PROBE, probe, clock, clock.seconds() + PROBE)
def started(self):
    start_service(self)
    self.reactor.callLater(PROBE, probe, self.reactor, self.reactor.seconds() + PROBE)
def timed_reload(self):
    # From the SIGHUP's call in the reactor to the new config in force (or refused).
    t0 = time.perf_counter()
    def done(ok):
        extra["reloads"].append([time.perf_counter() - t0, ok])
        return ok
    return reload(self).addBoth(done)
service.GatewayService.startService = started
service.GatewayService.reload = timed_reload
import gatewayd.daemon.gc_tuning as tune
if variant == "default":
    tune.freeze_startup_heap = lambda: None
elif variant == "freeze":
    def freeze_only():
        gc.collect(); gc.freeze()
    tune.freeze_startup_heap = freeze_only
sys.argv = ["twistd", *sys.argv[1:]]
from twisted.scripts.twistd import run
run()
"""


@dataclass(frozen=True)
class Phase:
    variant: str
    name: str
    load: Load
    gc: dict[str, list[float]]
    scrape_ms: list[float]
    stall_ms: float
    reload_ms: list[float]


def full_config(upstream_port: int, deployments: int, per_alias: int) -> dict[str, object]:
    cfg = config(upstream_port)
    extra = [
        {
            "model_name": f"big-{i // per_alias}",
            "litellm_params": {"model": f"mock/m{i}", "mock_response": "ok"},
            "model_info": {"id": f"big-{i}"},
        }
        for i in range(deployments)
    ]
    cfg["model_list"] = [*cfg["model_list"], *extra]  # type: ignore[misc]
    return cfg


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        t0 = time.perf_counter()
        headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t0
    finally:
        conn.close()


def warm_big(port: int, deployments: int, per_alias: int) -> None:
    """A few requests per mock alias, so every label set exists."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    try:
        for _ in range(3 * per_alias):
            for a in range((deployments + per_alias - 1) // per_alias):
                body = json.dumps(
                    {"model": f"big-{a}", "messages": [{"role": "user", "content": "x"}]}
                )
                conn.request("POST", "/v1/chat/completions", body, headers)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"big-{a}: {resp.status}")
    finally:
        conn.close()


class Scraper(threading.Thread):
    """GET /metrics and /health every second (``scrape``); SIGHUP the gateway a third and
    two thirds of the way in (``reload``)."""

    def __init__(self, port: int, pid: int, seconds: float, scrape: bool, reload: bool) -> None:
        super().__init__(daemon=True)
        self.port, self.pid, self.seconds = port, pid, seconds
        self.scrape, self.reload = scrape, reload
        self.took: list[float] = []
        self.failed: list[str] = []

    def run(self) -> None:
        start = time.monotonic()
        reloads = [self.seconds / 3, 2 * self.seconds / 3] if self.reload else []
        while (elapsed := time.monotonic() - start) < self.seconds - 0.5:
            if reloads and elapsed >= reloads[0]:
                reloads.pop(0)
                os.kill(self.pid, signal.SIGHUP)
            for path in ("/metrics", "/health") if self.scrape else ():
                status, took = request(self.port, "GET", path)
                if status != 200:
                    self.failed.append(f"{path}: {status}")
                self.took.append(took * 1000)
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start) % 1.0))


def run_phase(
    variant: str, name: str, proc: Proc, port: int, body: Path, log: Path, args: argparse.Namespace
) -> Phase:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    os.kill(proc.pid, signal.SIGUSR2)  # start counting collections
    scrape, reload = "scrape" in name, "reload" in name
    scraper = Scraper(port, proc.pid, args.duration, scrape, reload) if name != "plain" else None
    if scraper is not None:
        scraper.start()
    load = wrk(url, body, args.connections, args.duration, args.load_cpus, proc)
    if scraper is not None:
        scraper.join(30)
        if scraper.failed:
            raise RuntimeError(f"scrapes failed: {scraper.failed[:5]}")
    log.unlink(missing_ok=True)
    os.kill(proc.pid, signal.SIGUSR2)
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    stats = json.loads(log.read_text())
    stall, reloads = stats.pop("stall"), stats.pop("reloads")
    if any(not ok for _, ok in reloads):
        raise RuntimeError(f"a reload failed: see {proc.log}")
    took = [t * 1000 for t, _ in reloads]
    return Phase(variant, name, load, stats, scraper.took if scraper else [], stall * 1000, took)


def start_gateway(tmp: Path, cfg: Path, variant: str, cpus: str) -> tuple[Proc, int, Path]:
    port = free_port()
    log = tmp / f"gc-{variant}.json"
    wrapper = tmp / "gcwrapper.py"
    wrapper.write_text(WRAPPER)
    argv = [sys.executable, str(wrapper), "-n", "--pidfile=", "gateway", "-c", str(cfg)]
    argv += ["--host", "127.0.0.1", "-p", str(port)]
    env = {"BENCH_GC": variant, "BENCH_GC_LOG": str(log)}
    proc = Proc(f"gatewayd-{variant}", argv, tmp / f"gatewayd-{variant}.log", cpus, env, tmp)
    wait_http(port, "/health/readiness", 60, proc)
    return proc, port, log


def table(phases: list[Phase]) -> str:
    lines = [
        "| gc | phase | req/s | p50 ms | p99 ms | p99/p50 | gen2 GCs | longest GC ms "
        "| GC ms total | longest stall ms | reloads ms | scrape p50/max ms | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in phases:
        longest = max(s[2] for s in p.gc.values()) * 1000
        total = sum(s[1] for s in p.gc.values()) * 1000
        scrape = "-"
        if p.scrape_ms:
            ordered = sorted(p.scrape_ms)
            scrape = f"{ordered[len(ordered) // 2]:.1f} / {ordered[-1]:.1f}"
        lines.append(
            f"| {p.variant} | {p.name} | {p.load.rps:.0f} | {p.load.p50_ms:.2f} "
            f"| {p.load.p99_ms:.2f} | {p.load.p99_ms / p.load.p50_ms:.1f} | {p.gc['2'][0]:.0f} "
            f"| {longest:.1f} | {total:.0f} | {p.stall_ms:.1f} "
            f"| {' '.join(f'{t:.0f}' for t in p.reload_ms) or '-'} | {scrape} | {p.load.errors} |"
        )
    return "\n".join(lines)


def main() -> None:
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--deployments", type=int, default=1000, help="extra mock deployments")
    ap.add_argument("--per-alias", type=int, default=4)
    ap.add_argument("--variants", default="default,tuned", help="default,freeze,tuned")
    ap.add_argument(
        "--phases", default="plain,scrape,reload,scrape+reload", help="which, in this order"
    )
    ap.add_argument("--rounds", type=int, default=1, help="variants run interleaved N times")
    ap.add_argument("--target-cpus", default=str(cores - 1))
    ap.add_argument("--load-cpus", default="0")
    args = ap.parse_args()
    if shutil.which("nginx") is None or shutil.which("wrk") is None:
        sys.exit("needs nginx and wrk: apt-get install -y nginx wrk")
    tmp = Path(tempfile.mkdtemp(prefix="gatewayd-latency-"))
    phases: list[Phase] = []
    procs: list[Proc] = []
    try:
        upstream, up_port = start_nginx(
            "upstream", "nginx-upstream.conf.in", tmp / "up", args.load_cpus
        )
        procs.append(upstream)
        cfg = tmp / "config.yaml"
        cfg.write_text(yaml.safe_dump(full_config(up_port, args.deployments, args.per_alias)))
        body = bodies(tmp)["json"]
        for _ in range(args.rounds):
            for variant in args.variants.split(","):
                proc, port, log = start_gateway(tmp, cfg, variant, args.target_cpus)
                try:
                    warm_big(port, args.deployments, args.per_alias)
                    wrk(
                        f"http://127.0.0.1:{port}/v1/chat/completions",
                        body,
                        args.connections,
                        2.0,
                        args.load_cpus,
                        proc,
                    )  # warm up
                    for name in args.phases.split(","):
                        phase = run_phase(variant, name, proc, port, body, log, args)
                        phases.append(phase)
                        print(
                            f"  {variant} {name}: p50 {phase.load.p50_ms:.2f} "
                            f"p99 {phase.load.p99_ms:.2f} ms, stall {phase.stall_ms:.1f} ms, "
                            f"reloads {phase.reload_ms}",
                            file=sys.stderr,
                        )
                finally:
                    proc.stop()
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(phases))
    print(
        f"\n{args.duration:g} s per phase at {args.connections} connections; gateway on cpu "
        f"{args.target_cpus}, wrk and the upstream on {args.load_cpus}; "
        f"{args.deployments} extra mock deployments."
    )


if __name__ == "__main__":
    main()
