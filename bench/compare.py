"""gatewayd side by side with nginx and LiteLLM, in front of an upstream that costs almost
nothing; prints a markdown table.

    sudo apt-get install -y nginx wrk          # once (Debian/Ubuntu packages)
    python bench/compare.py [--duration 5] [--workers 2] [--with-litellm]

The upstream is nginx answering a fixed OpenAI chat completion and a fixed 20-chunk SSE
stream (``bench/nginx-upstream.conf.in``); ``wrk`` posts chat requests
(``bench/wrk-post.lua``). The target measured runs alone on its cores (``--target-cpus``,
default the last core); wrk and the upstream share the others (``--load-cpus``). Rows, for
non-streamed and streamed requests:

- nginx upstream alone (wrk straight to it: the client's and upstream's own limit),
- nginx as a plain reverse proxy in front of it (the no-logic limit),
- gatewayd with 1 worker, and with ``--workers N`` (on ``--worker-cpus``),
- LiteLLM's proxy on the same config file, when installed (``--with-litellm`` installs
  ``litellm[proxy]`` into ``bench/.litellm-venv`` first); with ``--litellm-workers N`` also
  its N-worker row (uvicorn's workers).

Columns: requests/s at saturation (``--saturation`` connections), p50/p99 at moderate
concurrency (``--moderate``), p50 at concurrency 1, CPU ms per request (the target's
utime+stime from ``/proc`` over the saturation phase, divided by the requests completed)
and peak RSS (VmHWM, summed over the target's processes). Every process is started here,
pinned with ``taskset``, listens on 127.0.0.1 only, and is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from harness import HERE, MASTER_KEY, Load, Proc, post_once, start_nginx, wait_http, wrk

from gatewayd.testing import free_port

LITELLM_VENV = HERE / ".litellm-venv"
LITELLM = LITELLM_VENV / "bin" / "litellm"
#: The commit issue 9 measured as "today's" gatewayd (1.44 / 1.64 CPU ms per request).
ISSUE_9_BASE = "7fe39f5"


@dataclass(frozen=True)
class Row:
    target: str
    mode: str
    workers: int
    saturated: Load
    moderate: Load
    single: Load
    rss_mb: float


def config(upstream_port: int) -> dict[str, object]:
    """One file for gatewayd and LiteLLM (LiteLLM's format loads unchanged in gatewayd):
    two aliases, retries armed, a master key."""
    base = f"http://127.0.0.1:{upstream_port}"

    def entry(alias: str, path: str) -> dict[str, object]:
        params = {"model": "openai/bench", "api_base": base + path, "api_key": "sk-upstream"}
        return {"model_name": alias, "litellm_params": params}

    return {
        "model_list": [entry("plain", "/plain/v1"), entry("sse", "/sse/v1")],
        "router_settings": {"num_retries": 2},
        "general_settings": {"master_key": MASTER_KEY},
    }


def start_upstream(tmp: Path, cpus: str) -> tuple[Proc, int, dict[str, Path], Path]:
    """The nginx upstream with fixed answers on ``cpus``, the request bodies for wrk and
    the config file for the gateways: ``(nginx, its port, bodies, config path)``."""
    upstream, port = start_nginx("upstream", "nginx-upstream.conf.in", tmp / "upstream", cpus)
    cfg = tmp / "config.yaml"
    cfg.write_text(yaml.safe_dump(config(port), sort_keys=False))
    return upstream, port, bodies(tmp), cfg


def bodies(directory: Path) -> dict[str, Path]:
    out = {}
    for mode, extra in (("json", {}), ("stream", {"stream": True})):
        body = {
            "model": "plain" if mode == "json" else "sse",
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 16,
            **extra,
        }
        out[mode] = directory / f"{mode}.json"
        out[mode].write_text(json.dumps(body))
    return out


def measure(
    name: str,
    proc: Proc,
    port: int,
    paths: dict[str, str],
    files: dict[str, Path],
    workers: int,
    args: argparse.Namespace,
) -> list[Row]:
    rows = []
    for mode in ("json", "stream"):
        status, answer = post_once(port, paths[mode], files[mode].read_bytes())
        wanted = b"[DONE]" if mode == "stream" else b"chat.completion"
        if status != 200 or wanted not in answer:
            raise RuntimeError(f"{name} {mode}: {status} {answer[:300]!r}")
        url = f"http://127.0.0.1:{port}{paths[mode]}"

        def run(conns: int, seconds: float, url: str = url, body: Path = files[mode]) -> Load:
            return wrk(url, body, conns, seconds, args.load_cpus, proc)

        run(args.moderate, 1.0)  # warm up: connections, pools, code paths
        saturated = run(args.saturation, args.duration)
        moderate = run(args.moderate, args.duration)
        single = run(1, args.duration)
        rows.append(Row(name, mode, workers, saturated, moderate, single, proc.peak_rss_mb()))
        print(
            f"  {name} {mode}: {saturated.rps:.0f} req/s, "
            f"{saturated.cpu_ms_per_request:.3f} CPU ms/req",
            file=sys.stderr,
        )
    return rows


def start_gatewayd(
    tmp: Path, cfg: Path, workers: int, cpus: str, bindir: Path | None = None
) -> tuple[Proc, int]:
    """gatewayd from this checkout's environment, or from ``bindir`` (a baseline's venv)."""
    port = free_port()
    twistd = str((bindir or Path(sys.executable).parent) / "twistd")
    argv = [twistd, "-n", "--pidfile=", "gateway", "-c", str(cfg)]
    argv += ["--host", "127.0.0.1", "-p", str(port)]
    if workers > 1:  # (a baseline from before --workers has no such flag)
        argv += ["--workers", str(workers)]
    name = f"gatewayd-{workers}" if bindir is None else f"baseline-{bindir.parent.name}"
    proc = Proc(name, argv, tmp / f"{name}.log", cpus, cwd=tmp)
    wait_http(port, "/health/readiness", 30, proc)
    if workers > 1:  # readiness answers from the first worker up: wait for them all
        deadline = time.monotonic() + 30
        while "workers listening" not in proc.log.read_text():
            if time.monotonic() > deadline or not proc.running():
                raise RuntimeError(f"gatewayd workers not ready:\n{proc.log.read_text()}")
            time.sleep(0.1)
    return proc, port


def start_litellm(tmp: Path, cfg: Path, workers: int, cpus: str) -> tuple[Proc, int]:
    port = free_port()
    argv = [str(LITELLM), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", str(workers)]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_DOCS": "True"}
    proc = Proc(f"litellm-{workers}", argv, tmp / f"litellm-{workers}.log", cpus, env, tmp)
    wait_http(port, "/health/liveliness", 180, proc)
    return proc, port


def setup_litellm() -> None:
    """``litellm[proxy]`` into its own venv (bench/.litellm-venv), once."""
    if LITELLM.exists():
        return
    print(f"installing litellm[proxy] into {LITELLM_VENV} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=300)
    pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"]
    subprocess.run(pip, check=True, timeout=1800)


def setup_baseline(rev: str) -> Path:
    """gatewayd as of git revision ``rev``, installed (not editable) into its own venv
    ``bench/.baseline-<commit>-venv``, once; returns the venv's ``bin``."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", f"{rev}^{{commit}}"],
        cwd=HERE,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    venv = HERE / f".baseline-{commit}-venv"
    if (venv / "bin" / "twistd").exists():
        return venv / "bin"
    print(f"installing gatewayd {commit} into {venv} ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="gatewayd-baseline-") as src:
        archive = subprocess.run(
            ["git", "archive", commit], cwd=HERE.parent, check=True, capture_output=True, timeout=60
        ).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True, timeout=60)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = [str(venv / "bin" / "pip"), "install", "-q", src]
        subprocess.run(pip, check=True, timeout=1800)
    return venv / "bin"


def ratios(rows: list[Row], base: str) -> str:
    """gatewayd's CPU per request over the baseline's, per round and mode (each gatewayd
    1-worker row against the baseline row measured just before it)."""
    lines, last = [], {}
    for r in rows:
        if r.target == base:
            last[r.mode] = r.saturated.cpu_ms_per_request
        elif r.target == "gatewayd" and r.workers == 1 and r.mode in last:
            ratio = r.saturated.cpu_ms_per_request / last.pop(r.mode)
            lines.append(f"- {r.mode}: {ratio:.3f} x the CPU per request of {base}")
    return "\n".join(lines)


def table(rows: list[Row]) -> str:
    lines = [
        "| target | mode | workers | req/s (saturated) | p50 ms | p99 ms | p50 ms (c=1) "
        "| CPU ms/req | peak RSS MB | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        errors = r.saturated.errors + r.moderate.errors + r.single.errors
        lines.append(
            f"| {r.target} | {r.mode} | {r.workers} | {r.saturated.rps:.0f} "
            f"| {r.moderate.p50_ms:.2f} | {r.moderate.p99_ms:.2f} | {r.single.p50_ms:.2f} "
            f"| {r.saturated.cpu_ms_per_request:.3f} | {r.rss_mb:.0f} | {errors} |"
        )
    return "\n".join(lines)


def main() -> None:
    cores = os.cpu_count() or 1
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    ap.add_argument("--saturation", type=int, default=64, help="connections, saturated")
    ap.add_argument("--moderate", type=int, default=8, help="connections, moderate")
    ap.add_argument("--workers", type=int, default=cores, help="N for the N-worker rows")
    ap.add_argument("--target-cpus", default=str(cores - 1), help="cores of a 1-worker target")
    ap.add_argument("--worker-cpus", default=None, help="cores of N-worker targets (all)")
    ap.add_argument("--load-cpus", default="0", help="cores of wrk and the upstream")
    ap.add_argument("--with-litellm", action="store_true", help="install LiteLLM if absent")
    ap.add_argument(
        "--litellm-workers", type=int, default=1, help="also LiteLLM with N workers (uvicorn)"
    )
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help=f"also gatewayd at git revision REV (issue 9's: {ISSUE_9_BASE}), 1 worker, "
        "measured just before this checkout's 1-worker rows; prints the CPU ratio",
    )
    ap.add_argument("--rounds", type=int, default=1, help="repeat the baseline and 1-worker rows")
    ap.add_argument("--skip", default="", help="comma-separated: proxy,gatewayd,litellm")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    worker_cpus = args.worker_cpus or f"0-{cores - 1}"
    skip = set(filter(None, args.skip.split(",")))
    if shutil.which("nginx") is None or shutil.which("wrk") is None:
        sys.exit("needs nginx and wrk: apt-get install -y nginx wrk")
    if args.with_litellm:
        setup_litellm()
    base_bin = setup_baseline(args.baseline) if args.baseline else None
    base = f"gatewayd @{base_bin.parent.name[10:-5]}" if base_bin else ""

    tmp = Path(tempfile.mkdtemp(prefix="gatewayd-bench-"))
    procs: list[Proc] = []
    rows: list[Row] = []
    try:
        upstream, up_port, files, cfg = start_upstream(tmp, args.load_cpus)
        procs.append(upstream)
        direct = {"json": "/plain/v1/chat/completions", "stream": "/sse/v1/chat/completions"}
        api = {"json": "/v1/chat/completions", "stream": "/v1/chat/completions"}

        rows += measure("nginx upstream alone", upstream, up_port, direct, files, 1, args)
        plan: list[tuple[str, int]] = []
        if "proxy" not in skip:
            plan.append(("nginx reverse proxy", 1))
        if "gatewayd" not in skip:
            pair = [(base, 1)] if base else []
            plan += [*pair, ("gatewayd", 1)] * max(1, args.rounds)
            plan += [("gatewayd", args.workers)] if args.workers > 1 else []
        if "litellm" not in skip:
            if LITELLM.exists():
                plan += [("litellm", 1)]
                if args.litellm_workers > 1:
                    plan.append(("litellm", args.litellm_workers))
            else:
                print("litellm: skipped (--with-litellm installs it)", file=sys.stderr)
        for name, workers in plan:
            cpus = args.target_cpus if workers == 1 else worker_cpus
            if name == "nginx reverse proxy":
                proc, port = start_nginx(
                    name, "nginx-proxy.conf.in", tmp / "proxy", cpus, upstream_port=up_port
                )
                paths = direct
            elif name == "gatewayd":
                proc, port = start_gatewayd(tmp, cfg, workers, cpus)
                paths = api
            elif name == base:
                proc, port = start_gatewayd(tmp, cfg, workers, cpus, base_bin)
                paths = api
            else:
                proc, port = start_litellm(tmp, cfg, workers, cpus)
                paths = api
            procs.append(proc)
            try:
                rows += measure(name, proc, port, paths, files, workers, args)
            finally:
                proc.stop()
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(table(rows))
    if base:
        print(ratios(rows, base))
    print(
        f"\n{args.duration:g} s per phase; saturated = {args.saturation} connections, "
        f"p50/p99 at {args.moderate}, c=1 alone; 1-worker targets on cpu {args.target_cpus}, "
        f"N-worker on {worker_cpus}, wrk and the upstream on {args.load_cpus}."
    )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], default=lambda o: o.__dict__))


if __name__ == "__main__":
    main()
