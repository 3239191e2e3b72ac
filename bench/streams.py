"""Thousands of token streams at once (issue 18): nginx and gatewayd side by side.

    sudo apt-get install -y nginx              # once (Debian/Ubuntu package)
    python bench/streams.py [--levels 256x50,2048x10] [--duration 6] [--workers 2]

For each level (N streams held open x frames a second each; every stream is 64 frames,
then the client posts the next one on the same connection), the instruments of
``bench/stream_load.py`` (a cheap upstream stamping each frame with its send time, a
client timing every frame's delivery) run first alone (the floor: the client straight
to the upstream), then through each target:

- nginx as a plain reverse proxy, ``proxy_buffering off`` (``bench/nginx-streams.conf.in``),
- gatewayd with 1 worker, and with ``--workers N``,
- translated streams through gatewayd, 1 worker: a Messages client and a Responses
  client on an OpenAI-format (chat only) upstream, a Chat client on an Anthropic one.

A 1-worker target runs alone on ``--target-cpus`` (default the last core); the client and
the upstream share ``--load-cpus`` (core 0); N workers run on every core, sharing one
with the load (said beside the figures). A level the instruments cannot carry alone
(frames short of the level by more than 5 %, or a delivery p99 over 5 ms) is reported as
such and not measured.

Columns: frames/s delivered; CPU per relayed frame (the target's utime+stime from
``/proc`` over the run, over the frames the client read); share of a core; delivery delay
p50 / p99 / max (stamp to read); the worst stream's worst delay over the p99 (fairness);
time to first chunk added over the floor's, p50 / p99; KiB per open stream (RSS sampled
twice a second, median, over the target's idle RSS, per stream); gatewayd's collections
and longest pause (``gatewayd.testing.gc_watch``); errors. With N workers, the open
streams per worker (each stream holds two sockets in its worker) sampled mid-run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from harness import HERE, MASTER_KEY, Proc, start_nginx, wait_http

from gatewayd.testing import free_port
from gatewayd.testing.gc_watch import GCWatch

FRAMES = 64
CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # floor, nginx, gatewayd
    workers: int = 1
    path: str = CHAT
    alias: str = "sse"


@dataclass
class Row:
    level: str
    target: str
    client: dict[str, Any]
    cpu_s: float = 0.0
    rss_kib_per_stream: float = float("nan")
    gc: dict[str, Any] = field(default_factory=dict)
    spread: list[int] = field(default_factory=list)
    note: str = ""

    @property
    def frames_per_s(self) -> float:
        return float(self.client["frames"]) / float(self.client["seconds"])

    @property
    def us_per_frame(self) -> float:
        frames = self.client["frames"]
        return 1e6 * self.cpu_s / frames if frames else float("nan")


def body(target: Target) -> str:
    doc: dict[str, Any] = {"model": target.alias, "stream": True, "max_tokens": 64}
    if target.path == "/v1/responses":
        doc["input"] = "Say hello"
        del doc["max_tokens"]
    else:
        doc["messages"] = [{"role": "user", "content": "Say hello"}]
    return json.dumps(doc)


def gateway_config(upstream_port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{upstream_port}"

    def entry(alias: str, model: str, api_base: str) -> dict[str, Any]:
        return {
            "model_name": alias,
            "params": {"model": model, "api_base": api_base, "api_key": "sk-upstream"},
        }

    return {
        "model_list": [
            entry("sse", "openai/bench", base + "/v1"),  # passed through
            entry("chatonly", "vllm/bench", base + "/v1"),  # Responses translated to chat
            entry("claude", "anthropic/bench", base + "/anthropic"),
        ],
        "router_settings": {"num_retries": 2},
        "general_settings": {"master_key": MASTER_KEY},
    }


def rss_kib(proc: Proc) -> int:
    total = 0
    for pid in proc.tree():
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def sockets(pid: int) -> int:
    n = 0
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd).startswith("socket:"):
                    n += 1
    return n


def start_gatewayd(
    tmp: Path, cfg: Path, workers: int, cpus: str, watch: GCWatch
) -> tuple[Proc, int]:
    port = free_port()
    twistd = str(Path(sys.executable).parent / "twistd")
    argv = [twistd, "-n", "--pidfile=", "gateway", "-c", str(cfg)]
    argv += ["--host", "127.0.0.1", "-p", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    name = f"gatewayd-{workers}-{free_port()}"
    proc = Proc(name, argv, tmp / f"{name}.log", cpus, watch.env(), tmp)
    wait_http(port, "/health/readiness", 30, proc)
    if workers > 1:
        deadline = time.monotonic() + 30
        while "workers listening" not in proc.log.read_text():
            if time.monotonic() > deadline or not proc.running():
                raise RuntimeError(f"gatewayd workers not ready:\n{proc.log.read_text()}")
            time.sleep(0.1)
    return proc, port


def run_client(
    port: int,
    target: Target,
    streams: int,
    args: argparse.Namespace,
    proc: Proc | None,
) -> tuple[dict[str, Any], float, list[int], list[int]]:
    """The client's results, the target's CPU seconds over the run, its RSS samples
    (KiB) and the open streams per worker mid-run."""
    argv = ["taskset", "-c", args.load_cpus, sys.executable, str(HERE / "stream_load.py")]
    argv += ["client", "--port", str(port), "--path", target.path, "--body", body(target)]
    argv += ["--key", MASTER_KEY, "--streams", str(streams), "--frames", str(FRAMES)]
    argv += ["--duration", f"{args.duration:g}", "--ramp", f"{args.ramp:g}"]
    samples: list[int] = []
    spread: list[int] = []
    done = threading.Event()

    def sample() -> None:
        began = time.monotonic()
        while not done.wait(0.5):
            if proc is None:
                continue
            samples.append(rss_kib(proc))
            if not spread and time.monotonic() - began > args.duration / 2 and target.workers > 1:
                spread.extend(sockets(pid) // 2 for pid in proc.tree()[1:])

    before = proc.cpu_seconds() if proc else 0.0
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=args.duration + 120, check=False
        )
    finally:
        done.set()
        sampler.join(5)
    cpu = (proc.cpu_seconds() - before) if proc else 0.0
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"the client gave no result:\n{out.stdout}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1]), cpu, samples, spread


def gc_summary(proc: Proc, watch: GCWatch) -> dict[str, Any]:
    """Collections and the longest pause over the gateway's processes."""
    counts, longest = [0, 0, 0], 0.0
    for pid in proc.tree():
        with contextlib.suppress(OSError, TimeoutError):
            r = watch.report(pid, timeout=5)
            counts = [a + b for a, b in zip(counts, r["collections"], strict=True)]
            longest = max(longest, *r["longest_ms"])
    return {"collections": counts, "longest_ms": longest}


def measure_level(
    level: str, targets: list[Target], args: argparse.Namespace, tmp: Path
) -> list[Row]:
    streams, rate = (int(x) for x in level.split("x"))
    rows: list[Row] = []
    up_port = free_port()
    up_argv = [sys.executable, str(HERE / "stream_load.py"), "upstream", "--port", str(up_port)]
    up_argv += ["--rate", str(rate), "--frames", str(FRAMES)]
    upstream = Proc(f"upstream-{level}", up_argv, tmp / f"upstream-{level}.log", args.load_cpus)
    cfg = tmp / f"config-{level}.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(up_port), sort_keys=False))
    try:
        deadline = time.monotonic() + 10
        while "listening" not in upstream.log.read_text():
            if time.monotonic() > deadline or not upstream.running():
                raise RuntimeError(f"upstream not ready: {upstream.log.read_text()}")
            time.sleep(0.05)
        floor: Row | None = None
        for target in targets:
            if floor is not None and floor.note and not args.force:
                rows.append(Row(level, target.name, floor.client, note="level not measured"))
                continue
            rows.append(one_run(level, target, streams, up_port, cfg, args, tmp))
            print(f"  {level} {target.name}: {summary(rows[-1])}", file=sys.stderr)
            if target.kind == "floor":
                floor = rows[-1]
                wanted = streams * rate
                if floor.frames_per_s < 0.95 * wanted * _steady(args) or (
                    floor.client["delay_ms"][1] > 5.0
                ):
                    floor.note = (
                        f"the instruments alone cannot carry {level} "
                        f"({floor.frames_per_s:.0f} frames/s, p99 "
                        f"{floor.client['delay_ms'][1]:.1f} ms): "
                        + (
                            "measured anyway (--force): its figures hold the instruments' delay"
                            if args.force
                            else "not measured"
                        )
                    )
    finally:
        upstream.stop()
    return rows


def _steady(args: argparse.Namespace) -> float:
    """The share of the level's frames a run can deliver, given the ramp."""
    duration, ramp = float(args.duration), float(args.ramp)
    return max(0.0, (duration - ramp / 2) / duration)


def one_run(
    level: str,
    target: Target,
    streams: int,
    up_port: int,
    cfg: Path,
    args: argparse.Namespace,
    tmp: Path,
) -> Row:
    cpus = args.target_cpus if target.workers == 1 else args.worker_cpus
    if target.kind == "floor":
        client, _, _, _ = run_client(up_port, target, streams, args, None)
        return Row(level, target.name, client)
    watch = GCWatch()
    try:
        if target.kind == "nginx":
            proc, port = start_nginx(
                f"nginx-{level}",
                "nginx-streams.conf.in",
                tmp / f"nginx-{level}",
                cpus,
                upstream_port=up_port,
            )
        else:
            proc, port = start_gatewayd(tmp, cfg, target.workers, cpus, watch)
        try:
            time.sleep(0.5)  # settled after start (the first scrape of RSS is the idle one)
            idle = rss_kib(proc)
            if target.kind == "gatewayd":
                gc_summary(proc, watch)  # the start-up's collections left out of the run's
            client, cpu, samples, spread = run_client(port, target, streams, args, proc)
            row = Row(level, target.name, client, cpu, spread=spread)
            if samples:
                row.rss_kib_per_stream = (statistics.median(samples) - idle) / streams
            if target.kind == "gatewayd":
                row.gc = gc_summary(proc, watch)
            return row
        finally:
            proc.stop()
    finally:
        watch.close()


def summary(r: Row) -> str:
    c = r.client
    return (
        f"{r.frames_per_s:.0f} frames/s, {r.us_per_frame:.1f} us/frame, "
        f"delay p50/p99/max {c['delay_ms'][0]:.2f}/{c['delay_ms'][1]:.2f}/{c['delay_ms'][2]:.1f} ms, "
        f"errors {c['errors']}"
    )


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        "| N x frames/s | target | frames/s | CPU us/frame | share of a core "
        "| delay p50 / p99 / max ms | worst stream / p99 | first chunk added p50 / p99 ms "
        "| KiB per stream | GC: collections (gen 0/1/2), longest ms | errors |",
        "|---|---|--:|--:|--:|---|--:|---|--:|---|--:|",
    ]
    floors = {r.level: r for r in rows if r.target == "instruments alone (floor)"}
    for r in rows:
        if r.note and r.target != "instruments alone (floor)":
            lines.append(f"| {r.level} | {r.target} | {r.note} |||||||||")
            continue
        c, f = r.client, floors.get(r.level)
        share = 100.0 * r.cpu_s / c["seconds"]
        worst = c["worst_stream_ms"][1] / c["delay_ms"][1] if c["delay_ms"][1] else float("nan")
        added = "-"
        if f is not None and r is not f:
            added = (
                f"{c['first_ms'][0] - f.client['first_ms'][0]:+.1f} / "
                f"{c['first_ms'][1] - f.client['first_ms'][1]:+.1f}"
            )
        gc = "-"
        if r.gc:
            n = r.gc["collections"]
            gc = f"{n[0]}/{n[1]}/{n[2]}, {r.gc['longest_ms']:.1f}"
        cpu = "-" if r.target.startswith("instruments") else f"{r.us_per_frame:.1f}"
        share_s = "-" if r.target.startswith("instruments") else f"{share:.0f} %"
        kib = "-" if r.rss_kib_per_stream != r.rss_kib_per_stream else f"{r.rss_kib_per_stream:.1f}"
        d = c["delay_ms"]
        lines.append(
            f"| {r.level} | {r.target} | {r.frames_per_s:.0f} | {cpu} | {share_s} "
            f"| {d[0]:.2f} / {d[1]:.2f} / {d[2]:.1f} | {worst:.1f} | {added} | {kib} "
            f"| {gc} | {c['errors']} |"
        )
    notes = [r.note for r in rows if r.note and r.target.startswith("instruments")]
    spreads = [
        f"- {r.level} {r.target}: open streams per worker mid-run {r.spread} "
        f"(most over the mean: {max(r.spread) / (sum(r.spread) / len(r.spread)):.2f})"
        for r in rows
        if r.spread and sum(r.spread)
    ]
    per_core = [
        f"- {r.level} {r.target}: {r.client['frames'] / r.cpu_s:.0f} frames per CPU second"
        for r in rows
        if r.target.startswith(("gatewayd, 1", "gatewayd, ", "nginx")) and r.cpu_s > 0
    ]
    return "\n".join(
        [
            *lines,
            "",
            *notes,
            *spreads,
            *per_core,
            "",
            f"{args.duration:g} s per run, streams opened over {args.ramp:g} s, {FRAMES} frames "
            f"each; 1-worker targets on cpu {args.target_cpus}, N workers on "
            f"{args.worker_cpus} (sharing a core with the load), client and upstream on "
            f"{args.load_cpus}. Load average at the start: {os.getloadavg()[0]:.2f}.",
        ]
    )


def main() -> None:
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--levels", default="256x50,2048x10", help="N streams x frames/s, ...")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds to open the N streams")
    ap.add_argument("--workers", type=int, default=cores, help="N for the N-worker rows")
    ap.add_argument("--target-cpus", default=str(cores - 1))
    ap.add_argument("--worker-cpus", default=f"0-{cores - 1}")
    ap.add_argument("--load-cpus", default="0")
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated: nginx, workers, translated",
    )
    ap.add_argument(
        "--force", action="store_true", help="measure a level the instruments cannot carry"
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if "nginx" not in skip and shutil.which("nginx") is None:
        sys.exit("needs nginx: apt-get install -y nginx (or --skip nginx)")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the targets

    targets = [Target("instruments alone (floor)", "floor")]
    if "nginx" not in skip:
        targets.append(Target("nginx (proxy_buffering off)", "nginx"))
    targets.append(Target("gatewayd, 1 worker", "gatewayd"))
    if "workers" not in skip and args.workers > 1:
        targets.append(Target(f"gatewayd, --workers {args.workers}", "gatewayd", args.workers))
    if "translated" not in skip:
        targets += [
            Target(
                "gatewayd, 1 worker: Messages client, OpenAI upstream",
                "gatewayd",
                path="/v1/messages",
                alias="sse",
            ),
            Target(
                "gatewayd, 1 worker: Responses client, OpenAI (chat) upstream",
                "gatewayd",
                path="/v1/responses",
                alias="chatonly",
            ),
            Target(
                "gatewayd, 1 worker: Chat client, Anthropic upstream", "gatewayd", alias="claude"
            ),
        ]
    tmp = Path(tempfile.mkdtemp(prefix="gatewayd-streams-"))
    rows: list[Row] = []
    try:
        for level in args.levels.split(","):
            rows += measure_level(level.strip(), targets, args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(table(rows, args))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))


if __name__ == "__main__":
    main()
