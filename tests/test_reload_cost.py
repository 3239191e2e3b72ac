"""A reload of a big config: shared work done once, and the same checks as before."""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_routing import Harness, ScriptedProvider, conf, entry
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from gatewayd import service as service_module
from gatewayd.config import ConfigError, GatewayConfig, load_config, parse_config
from gatewayd.config import deployments as deployments_module
from gatewayd.config import pace as pace_module
from gatewayd.config.tls import tls_creator
from gatewayd.routing import Router, RoutingTable, build_table
from gatewayd.testing.tlsfiles import TLSFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _doc(params: list[dict[str, Any]]) -> str:
    entries = [
        {
            "model_name": f"a{i}",
            "params": {"model": "openai/m", "api_base": "https://h.test/v1", **p},
        }
        for i, p in enumerate(params)
    ]
    return json.dumps({"model_list": entries})


def test_tls_settings_shared_by_deployments_are_loaded_once(
    tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[Any] = []

    def counting(settings: Any, host: bytes) -> Any:
        loads.append(settings)
        return tls_creator(settings, host)

    monkeypatch.setattr(deployments_module, "tls_creator", counting)
    mtls = {"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.client_key)}
    config = parse_config(_doc([{}] * 50 + [mtls] * 50), environ={})
    assert len(config.deployments) == 100
    # Once for the default trust, once for the client certificate (its trust is the same).
    assert len(loads) == 2
    assert {(d.ssl_certfile, d.ssl_keyfile) for d in config.deployments} == {
        (None, None),
        (mtls["ssl_certfile"], mtls["ssl_keyfile"]),
    }


def test_a_bad_tls_file_after_good_ones_is_still_refused_by_its_path(
    tls: TLSFiles, tmp_path: Path
) -> None:
    good = {"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.client_key)}
    wrong_key = {"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.server_key)}
    with pytest.raises(ConfigError) as info:
        parse_config(_doc([{}, good, good, wrong_key]), environ={})
    assert info.value.path == "model_list[3].params.ssl_certfile"
    assert "cannot load" in info.value.reason
    # A file that vanished is noticed for each deployment, loaded or not before.
    gone = tmp_path / "gone.pem"
    gone.write_bytes(Path(tls.ca).read_bytes())
    bundle = {"ssl_verify": str(gone)}
    parse_config(_doc([bundle]), environ={})
    gone.unlink()
    with pytest.raises(ConfigError) as info:
        parse_config(_doc([{}, bundle]), environ={})
    assert info.value.path == "model_list[1].params.ssl_verify"
    assert "cannot read" in info.value.reason


# -- the swap in steps ------------------------------------------------------------


def _big(n: int, per_alias: int = 4, general: str = "") -> str:
    return conf([entry(f"m{i // per_alias}", f"d{i}") for i in range(n)], general)


def _consistent(router: Router) -> bool:
    """The router's table and pools are of one table (what route() reads together)."""
    table, pools = router.table, router._pools
    return set(pools) == set(table.routes) and all(
        pools[a].routes is table.routes[a] for a in table.routes
    )


def test_a_stepped_swap_shows_the_old_table_until_one_step_swaps_it_whole() -> None:
    h = Harness(_big(40, general="  allowed_fails: 0\n"))
    old = h.router.table
    cfg = parse_config(_big(400), environ={})
    new = build_table(cfg, lambda d: ScriptedProvider(d, h.clock, []))
    swapped: list[RoutingTable] = []
    steps = h.router.swap_in_steps(new, step=50, on_swap=lambda: swapped.append(h.router.table))
    seen = []
    for _ in steps:
        assert _consistent(h.router)
        seen.append(h.router.table)
        if len(seen) == 2:  # a deployment trips between two steps: its new pool follows
            h.router.health.failure("d1", "refused", None, transient=True)
    assert _consistent(h.router) and h.router.table is new and swapped == [new]
    # Several steps before the swap (400 deployments, 50 a step), the old table meanwhile.
    assert seen[:7] == [old] * 7 and seen[-1] is new
    assert "d1" not in h.router._pools["m0"].open_ids()
    assert set(h.router._pools["m0"].open_ids()) == {"d0", "d2", "d3"}
    # The old pools are gone, and so are their weak references in the health states.
    assert all(len(s.watchers) + len(s.busy_watchers) == 1 for s in h.router.health.states.values())


def test_a_stepped_swap_abandoned_before_the_swap_leaves_the_old_table() -> None:
    h = Harness(_big(8))
    old, old_pools = h.router.table, h.router._pools
    cfg = parse_config(_big(400), environ={})
    steps = h.router.swap_in_steps(build_table(cfg, lambda d: ScriptedProvider(d, h.clock, [])))
    next(steps)  # and no more: a failed reload
    assert h.router.table is old and h.router._pools is old_pools


# -- reloads of the service ---------------------------------------------------------


def _write(path: Path, aliases: int) -> None:
    entries = "".join(
        f"  - model_name: {name}\n    params: {{model: mock/{name}}}\n"
        for name in (f"x{i}" for i in range(aliases))
    )
    path.write_text("model_list:\n" + entries)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_a_reload_in_steps_swaps_config_and_table_together(tmp_path: Path) -> None:
    from twisted.internet import reactor

    path = tmp_path / "gw.yaml"
    _write(path, 3)
    svc = service_module.GatewayService.from_file(
        str(path), "tcp:port=0:interface=127.0.0.1", handle_sighup=False
    )
    _write(path, 600)
    seen: list[tuple[int, bool]] = []
    watching = [True]

    def watch() -> None:  # every reactor turn: what a request would read
        seen.append((len(svc.router.table.routes), svc.config is svc.router.table.config))
        if watching[0] and len(seen) < 100_000:
            reactor.callLater(0, watch)

    watch()
    ok = await svc.reload()
    watching[0] = False
    assert ok is True
    assert all(same for _, same in seen)
    assert {n for n, _ in seen} <= {3, 600}
    assert len(svc.router.table.routes) == 600


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_a_reload_asked_during_the_stepped_swap_is_one_more_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gw.yaml"
    _write(path, 3)
    svc = service_module.GatewayService.from_file(
        str(path), "tcp:port=0:interface=127.0.0.1", handle_sighup=False
    )
    _write(path, 600)
    real = svc.router.swap_in_steps
    asked: list[Deferred[bool]] = []

    def steps(table: RoutingTable, step: int = 100, on_swap: Any = None) -> Iterator[None]:
        for n, _ in enumerate(real(table, step, on_swap)):
            if n == 1:  # mid-swap: the new file is in place, then two SIGHUPs
                _write(path, 5)
                asked.extend([svc.reload(), svc.reload()])
            yield

    loads: list[str] = []
    real_load = load_config

    def counting_load(p: str, environ: Any = None) -> GatewayConfig:
        loads.append(p)
        return real_load(p)

    monkeypatch.setattr(service_module, "load_config", counting_load)
    monkeypatch.setattr(svc.router, "swap_in_steps", steps)
    first = await svc.reload()
    assert first is True and len(asked) == 2
    assert [await asked[0], await asked[1]] == [True, True]
    assert len(svc.router.table.routes) == 5
    assert len(loads) == 2  # the two asked mid-swap made one more


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_the_build_runs_with_short_gil_turns_and_collections_then_both_are_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gw.yaml"
    _write(path, 3)
    svc = service_module.GatewayService.from_file(
        str(path), "tcp:port=0:interface=127.0.0.1", handle_sighup=False
    )
    during: list[tuple[float, int]] = []
    real = load_config

    def load(p: str, environ: Any = None) -> GatewayConfig:
        during.append((sys.getswitchinterval(), gc.get_threshold()[0]))
        return real(p)

    monkeypatch.setattr(service_module, "load_config", load)
    before, thresholds = sys.getswitchinterval(), gc.get_threshold()
    monkeypatch.setattr(pace_module, "BUILD_YOUNG_THRESHOLD", thresholds[0] // 2)
    assert before > pace_module.BUILD_SWITCH_INTERVAL
    assert await svc.reload() is True
    path.write_text("model_list: [{model_name: a, params: {model: nope/a}}]\n")
    assert await svc.reload() is False  # refused, logged, the old config kept
    assert len(svc.router.table.routes) == 3
    # A short interval and short young collections during the build, put back after.
    assert during == [(pace_module.BUILD_SWITCH_INTERVAL, thresholds[0] // 2)] * 2
    assert sys.getswitchinterval() == before and gc.get_threshold() == thresholds


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_the_replaced_table_is_freed_by_reference_counting(tmp_path: Path) -> None:
    """gctune freezes the startup heap: the first table is never collected by the cycle
    collector, so a reload must free it by reference counting alone (no cycles)."""
    path = tmp_path / "gw.yaml"
    _write(path, 50)
    svc = service_module.GatewayService.from_file(
        str(path), "tcp:port=0:interface=127.0.0.1", handle_sighup=False
    )
    old = weakref.ref(svc.router.table)
    old_config = weakref.ref(svc.config)
    old_pool = weakref.ref(svc.router._pools["x0"])
    provider = svc.router.table.routes["x0"][0].provider
    old_provider = weakref.ref(provider)
    del provider
    _write(path, 60)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        assert await svc.reload() is True
        assert len(svc.router.table.routes) == 60
        assert [old(), old_config(), old_pool(), old_provider()] == [None] * 4
    finally:
        if was_enabled:
            gc.enable()


def test_a_paced_build_sleeps_between_its_runs_and_an_unpaced_one_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    text = _big(40)
    unpaced = parse_config(text, environ={})
    assert sleeps == []
    with pace_module.pacing(run=0.0, pause=0.25):  # a pause at every step
        paced = parse_config(text, environ={})
        build_table(paced, lambda d: ScriptedProvider(d, Clock(), []))
    assert paced == unpaced  # the same config, paced or not
    # At least once per YAML scalar and per deployment (40) and table entry (40).
    assert len(sleeps) > 3 * 40 and set(sleeps) == {0.25}
    sleeps.clear()
    pace_module.pace()
    assert sleeps == []  # the pacing ended with its block


def test_pacing_is_per_thread() -> None:
    seen: list[bool] = []
    with pace_module.pacing(run=0.0, pause=0.0):
        other = threading.Thread(target=lambda: seen.append(pace_module._local.__dict__ == {}))
        other.start()
        other.join(10)
    assert seen == [True]
