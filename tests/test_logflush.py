"""gatewayd.observability.log_flush.TurnFlushed: one write and flush per reactor turn."""

from __future__ import annotations

import io
import threading
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from gatewayd.observability.log_flush import TurnFlushed


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        self.flushes += 1


def running_reactor() -> Any:
    reactor = MemoryReactorClock()
    reactor.running = True
    return reactor


def test_lines_of_one_turn_go_out_in_one_write_at_the_next_turn() -> None:
    out, reactor = CountingStream(), running_reactor()
    stream = TurnFlushed(out, reactor)
    for i in range(3):
        stream.write(f"line {i}\n")
        stream.flush()
    assert out.getvalue() == "" and out.writes == 0
    reactor.advance(0)
    assert out.getvalue() == "line 0\nline 1\nline 2\n"
    assert (out.writes, out.flushes) == (1, 1)
    stream.write("next\n")
    reactor.advance(0)
    assert out.getvalue().endswith("line 2\nnext\n") and out.writes == 2


def test_before_the_reactor_runs_every_line_goes_out_at_once() -> None:
    out, reactor = CountingStream(), MemoryReactorClock()
    stream = TurnFlushed(out, reactor)
    stream.write("starting\n")
    assert out.getvalue() == "starting\n" and out.flushes == 1


def test_what_is_held_goes_out_before_a_line_written_after_the_reactor_stopped() -> None:
    out, reactor = CountingStream(), running_reactor()
    stream = TurnFlushed(out, reactor)
    stream.write("held\n")
    reactor.running = False
    stream.write("after\n")
    assert out.getvalue() == "held\nafter\n"


def test_the_reactor_shutdown_writes_what_is_held() -> None:
    out, reactor = CountingStream(), running_reactor()
    stream = TurnFlushed(out, reactor)
    stream.write("last words\n")
    call, args, kwargs = reactor.triggers["after"]["shutdown"][0]
    call(*args, **kwargs)
    assert out.getvalue() == "last words\n"


def test_another_threads_line_goes_out_at_once() -> None:
    out, reactor = CountingStream(), running_reactor()
    stream = TurnFlushed(out, reactor)
    stream.write("reactor\n")
    worker = threading.Thread(target=stream.write, args=("thread\n",))
    worker.start()
    worker.join(10)
    assert out.getvalue() == "thread\n"
    reactor.advance(0)
    assert out.getvalue() == "thread\nreactor\n"


def test_a_burst_bigger_than_the_bound_is_written_without_waiting() -> None:
    out, reactor = CountingStream(), running_reactor()
    stream = TurnFlushed(out, reactor)
    line = "x" * 1000 + "\n"
    for _ in range(70):
        stream.write(line)
    assert out.writes == 1 and len(out.getvalue()) > 64 * 1024
