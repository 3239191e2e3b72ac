"""``--workers N``: one supervising process holds the listening socket; N workers accept on it.

The supervisor opens the socket from ``--host``/``-p``/``--listen`` (or takes systemd's) and
passes the descriptor to each worker as fd 3; a worker adopts it with
``reactor.adoptStreamPort``. Sharing one socket (rather than ``SO_REUSEPORT``, a socket per
worker) works for every endpoint the single process takes (TCP, UNIX, port 0, socket
activation), and a dying worker strands no connections: they wait in the one accept queue
for the others instead of being reset with its own queue.

Each worker is the ordinary gateway (``twistd -n gateway``) started with
``GATEWAYD_WORKER_FD`` in its environment. It reports ``READY=1`` over the sd_notify protocol
to a private datagram socket of the supervisor, which tells systemd once every worker listens.
The supervisor validates the file before passing ``SIGHUP`` on, drains on ``SIGTERM``, and
restarts a worker that dies (with a backoff against crash loops).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, ProcessProtocol, Protocol
from twisted.python.failure import Failure

from gatewayd.config import ConfigError, load_config
from gatewayd.daemon import accept_balance
from gatewayd.daemon.worker import FD_ENV, INDEX_ENV, SUPERVISOR_ENV
from gatewayd.observability.log import get_logger
from gatewayd.sockets import systemd_notify as systemd

log = get_logger("gatewayd.daemon.workers")

_CHILD_FD = 3
#: Variables of the supervisor's environment a worker must not act on itself.
_NOT_INHERITED = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET")
#: A worker that lived shorter than this counts as a crash loop step.
_QUICK_DEATH = 10.0
_MAX_BACKOFF = 30.0
_RELOAD_WAIT = 30.0


@dataclass
class _Slot:
    """One worker position: restarted in place when its process dies."""

    index: int
    process: Any = None
    pid: int | None = None
    started: float = 0.0
    quick_deaths: int = 0
    ready: bool = False
    restart: IDelayedCall | None = None
    ended: Deferred[None] = field(default_factory=Deferred)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: Supervisor, slot: _Slot) -> None:
        self.supervisor = supervisor
        self.slot = slot

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self.slot, reason)


class _NotifyProtocol(DatagramProtocol):
    """A worker's sd_notify messages (``READY=1`` ...)."""

    noisy = False

    def __init__(self, supervisor: Supervisor, slot: _Slot) -> None:
        self.supervisor = supervisor
        self.slot = slot

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if b"READY=1" in datagram.split(b"\n"):
            self.supervisor._worker_ready(self.slot)


class Supervisor(Service):
    """Holds the listening socket and keeps ``count`` worker processes running on it."""

    name = "gatewayd-supervisor"

    def __init__(
        self,
        config_path: str,
        endpoint: IStreamServerEndpoint,
        count: int,
        reactor: Any,
        *,
        verbose: bool = False,
        grace: float = 30.0,
        listen_description: str = "",
    ) -> None:
        self.config_path = os.path.abspath(config_path)
        self.endpoint = endpoint
        self.count = count
        self.reactor = reactor
        self.verbose = verbose
        self.grace = grace
        self.listen_description = listen_description
        self.port: IListeningPort | None = None
        self.slots = [_Slot(i) for i in range(count)]
        self.tmpdir = ""
        self._notify_ports: list[Any] = []
        self._stopping = False
        self._announced = False
        self._reload_wait: IDelayedCall | None = None

    # -- start ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.tmpdir = tempfile.mkdtemp(prefix="gatewayd-workers-")
        os.mkdir(os.path.join(self.tmpdir, "metrics"))
        accept_balance.create(os.path.join(self.tmpdir, "balance"), self.count)
        unused = Factory.forProtocol(Protocol)  # never called: the workers accept
        unused.noisy = False
        d = self.endpoint.listen(unused)
        d.addCallbacks(self._listening, self._listen_failed)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))

    def _listening(self, port: IListeningPort) -> None:
        # The supervisor only holds the socket: the workers accept.
        port.stopReading()  # type: ignore[attr-defined]
        self.port = port
        for slot in self.slots:
            path = os.path.join(self.tmpdir, f"notify-{slot.index}")
            self._notify_ports.append(
                self.reactor.listenUNIXDatagram(path, _NotifyProtocol(self, slot))
            )
            self._spawn(slot)

    def _listen_failed(self, failure: Failure) -> None:
        where = self.listen_description or str(self.endpoint)
        log.critical("cannot listen on {listen}: {err}", listen=where, err=failure.value)
        print(f"gatewayd: cannot listen on {where}: {failure.value}", file=sys.stderr)
        self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
        self.reactor.stop()

    def _environment(self, slot: _Slot) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env.update(
            {
                FD_ENV: str(_CHILD_FD),
                INDEX_ENV: str(slot.index),
                SUPERVISOR_ENV: str(os.getpid()),
                **accept_balance.environment(os.path.join(self.tmpdir, "balance"), self.count),
                "NOTIFY_SOCKET": os.path.join(self.tmpdir, f"notify-{slot.index}"),
                # Every worker writes its metric values here and /metrics sums them
                # (gatewayd.observability.metric_share; the variable is prometheus_client's name).
                "PROMETHEUS_MULTIPROC_DIR": os.path.join(self.tmpdir, "metrics"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(self, slot: _Slot) -> None:
        assert self.port is not None
        slot.restart = None
        slot.ready = False
        slot.ended = Deferred()
        args = ["-c", self.config_path, *(["-v"] if self.verbose else [])]
        code = "from gatewayd.daemon.worker import worker_main; worker_main()"
        fd = self.port.fileno()  # type: ignore[attr-defined]
        slot.process = self.reactor.spawnProcess(
            _WorkerProtocol(self, slot),
            sys.executable,
            [sys.executable, "-c", code, *args],
            env=self._environment(slot),
            childFDs={0: "w", 1: 1, 2: 2, _CHILD_FD: fd},
        )
        slot.pid = slot.process.pid
        slot.started = self.reactor.seconds()
        log.info("worker {index} started (pid {pid})", index=slot.index, pid=slot.pid)

    def _worker_ready(self, slot: _Slot) -> None:
        slot.ready = True
        if self._announced:  # a restarted (or reloaded) worker is back: say so, once
            log.info("worker {index} (pid {pid}) listening", index=slot.index, pid=slot.pid)
        if not self._announced and all(s.ready for s in self.slots):
            self._announced = True
            log.info(
                "gatewayd supervisor (pid {pid}): {n} workers listening on {addr}",
                pid=os.getpid(),
                n=self.count,
                addr=self.listen_description,
            )
            systemd.notify("READY=1")
        if self._reload_wait is not None and all(s.ready for s in self.slots):
            self._reload_done()

    # -- worker deaths ---------------------------------------------------------

    def _ended(self, slot: _Slot, reason: Failure) -> None:
        pid, slot.process, slot.pid = slot.pid, None, None
        slot.ready = False
        _forget_metrics(self.tmpdir, pid)
        slot.ended.callback(None)
        if self._stopping:
            return
        lived = self.reactor.seconds() - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if lived < _QUICK_DEATH else 0
        delay = min(_MAX_BACKOFF, 0.25 * 2**slot.quick_deaths)
        log.error(
            "worker {index} (pid {pid}) died: {why}; restarting in {delay:.2f}s",
            index=slot.index,
            pid=pid,
            why=reason.value,
            delay=delay,
        )
        slot.restart = self.reactor.callLater(delay, self._spawn, slot)

    # -- reload ----------------------------------------------------------------

    def reload(self) -> bool:
        """Validate the file once; only if it is valid, SIGHUP every worker (each reloads).

        Returns True when the workers were signalled."""
        systemd.reloading()
        try:
            load_config(self.config_path)
        except ConfigError as e:
            log.error("reload failed, every worker keeps the running config: {err}", err=str(e))
            systemd.notify("READY=1")
            return False
        log.info("config valid: reloading {n} workers", n=self.count)
        for slot in self.slots:
            if slot.process is not None:
                slot.ready = False
                slot.process.signalProcess("HUP")
        if self._reload_wait is not None and self._reload_wait.active():
            self._reload_wait.cancel()
        self._reload_wait = self.reactor.callLater(_RELOAD_WAIT, self._reload_done)
        return True

    def _reload_done(self) -> None:
        if self._reload_wait is not None and self._reload_wait.active():
            self._reload_wait.cancel()
        self._reload_wait = None
        systemd.notify("READY=1")

    # -- stop --------------------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """SIGTERM every worker (each drains), SIGKILL what is left after the grace period.

        Fires with None once every worker has exited and the temporary files are gone."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping = True
        systemd.notify("STOPPING=1")
        if self._reload_wait is not None and self._reload_wait.active():
            self._reload_wait.cancel()
        if self.port is not None:
            self.port.stopListening()  # the workers' copies stay open while they drain
        waits: list[Deferred[None]] = []
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            if slot.process is not None:
                with contextlib.suppress(Exception):
                    slot.process.signalProcess("TERM")
                waits.append(slot.ended)
        killer = self.reactor.callLater(self.grace + 5.0, self._kill_all)
        from twisted.internet.defer import DeferredList

        done: Deferred[Any] = DeferredList(waits) if waits else succeed(None)

        def cleanup(_: object) -> None:
            if killer.active():
                killer.cancel()
            for p in self._notify_ports:
                p.stopListening()
            shutil.rmtree(self.tmpdir, ignore_errors=True)

        done.addBoth(cleanup)
        done.addBoth(lambda _: log.info("every worker has exited"))
        return done

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.process is not None:
                log.warn("worker {index} (pid {pid}) did not drain: killed", **_who(slot))
                with contextlib.suppress(Exception):
                    slot.process.signalProcess("KILL")


def _who(slot: _Slot) -> dict[str, Any]:
    return {"index": slot.index, "pid": slot.pid}


def _forget_metrics(tmpdir: str, pid: int | None) -> None:
    """A dead worker's live gauges leave the sum (its counters stay)."""
    if pid is None or not tmpdir:
        return
    with contextlib.suppress(Exception):
        from gatewayd.observability.metric_share import forget_process

        forget_process(os.path.join(tmpdir, "metrics"), pid)


def supervisor_for(
    config_path: str, endpoint: IStreamServerEndpoint, count: int, reactor: Any, **kw: Any
) -> Supervisor:
    """The supervisor for ``count`` workers; raises ConfigError for endpoints it cannot share."""
    if isinstance(endpoint, endpoints.SSL4ServerEndpoint):
        raise ConfigError(
            "--workers", "ssl: endpoints cannot be shared by workers yet (terminate TLS in front)"
        )
    return Supervisor(config_path, endpoint, count, reactor, **kw)
