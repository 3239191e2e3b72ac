"""``--workers``: a worker holding more than its share of connections stops accepting
until the others caught up (gatewayd.daemon.accept_balance)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

from twisted.internet.task import Clock

from gatewayd.daemon import accept_balance
from gatewayd.daemon.accept_balance import FLOOR, RECHECK, AcceptBalance


class FakePort:
    connected = True

    def __init__(self) -> None:
        self.reading = True
        self.numberAccepts = 100
        self.reads = 0

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True

    def doRead(self) -> None:
        self.reads += 1


def _peer(path: Path, index: int, pid: int, open_now: int) -> None:
    with open(path, "r+b") as f:
        f.seek(16 * index)
        f.write(struct.pack("qq", pid, open_now))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_worker_over_its_share_stops_accepting_until_the_others_catch_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / "balance"
    accept_balance.create(str(path), 2)
    clock = Clock()
    mine = AcceptBalance(clock, str(path), 0, 2)
    port = FakePort()
    mine.attach(port)
    _peer(path, 1, os.getpid(), 10)  # a live peer with 10 connections
    for n in range(1, 12):
        mine.changed(n)
    assert port.reading  # 11 against 10: within the slack
    mine.changed(14)
    assert not port.reading and mine.stopped  # 14 > 1.1 x 12
    clock.advance(RECHECK)
    assert not port.reading  # the peer did not move: still stopped
    _peer(path, 1, os.getpid(), 14)
    clock.advance(RECHECK)
    assert port.reading and not mine.stopped
    port.doRead()
    assert port.numberAccepts == 1 and port.reads == 1  # one accept per wakeup


def test_few_connections_or_dead_peers_never_stop_a_worker(tmp_path: Path) -> None:
    path = tmp_path / "balance"
    accept_balance.create(str(path), 3)
    clock = Clock()
    mine = AcceptBalance(clock, str(path), 0, 3)
    port = FakePort()
    mine.attach(port)
    _peer(path, 1, os.getpid(), 0)
    mine.changed(FLOOR - 1)
    assert port.reading  # below the floor
    _peer(path, 1, _dead_pid(), 0)
    _peer(path, 2, 0, 0)  # never started
    mine.changed(500)
    assert port.reading  # the only live worker keeps accepting


def test_the_environment_names_the_shared_file(tmp_path: Path) -> None:
    path = tmp_path / "balance"
    accept_balance.create(str(path), 2)
    env = accept_balance.environment(str(path), 2)
    for k, v in env.items():
        os.environ[k] = v
    try:
        assert accept_balance.from_environment(Clock(), "1") is not None
        assert accept_balance.from_environment(Clock(), None) is None
    finally:
        for k in env:
            del os.environ[k]
