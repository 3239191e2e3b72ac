"""A worker of ``--workers N``: the ordinary gateway adopting the supervisor's listening
socket (fd 3), naming itself in a header, and dying with its supervisor. The supervisor is
:mod:`gatewayd.daemon.workers`."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from zope.interface import implementer

from gatewayd.daemon import accept_balance
from gatewayd.daemon.accept_balance import AcceptBalance
from gatewayd.observability.log import get_logger
from gatewayd.service import GatewayService
from gatewayd.web.request import GatewayRequest

log = get_logger("gatewayd.daemon.workers")

FD_ENV = "GATEWAYD_WORKER_FD"
INDEX_ENV = "GATEWAYD_WORKER_INDEX"
SUPERVISOR_ENV = "GATEWAYD_SUPERVISOR_PID"
#: Response header naming the worker (its pid) that answered, in worker mode only.
WORKER_HEADER = b"x-gatewayd-worker"


def worker_fd() -> int | None:
    """The inherited listening descriptor when this process is a worker, else None."""
    value = os.environ.get(FD_ENV)
    return int(value) if value else None


# -- the worker side -------------------------------------------------------------


@implementer(IStreamServerEndpoint)
class InheritedSocketEndpoint:
    """Listens on an inherited, already listening socket (``adoptStreamPort``)."""

    def __init__(self, reactor: Any, fd: int, balance: AcceptBalance | None = None) -> None:
        self.reactor = reactor
        self.fd = fd
        self.balance = balance

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        """Fires with the adopted port (the inherited fd is closed: the port holds a dup)."""
        try:
            probe = socket.socket(fileno=os.dup(self.fd))  # detects the family
            family = probe.family
            probe.detach()
            port: IListeningPort = self.reactor.adoptStreamPort(self.fd, family, factory)
            os.close(self.fd)
            if self.balance is not None:
                self.balance.attach(port)
        except Exception:
            return fail()
        return succeed(port)


class WorkerRequest(GatewayRequest):
    """Names the answering worker, so that clients and tests can tell the workers apart."""

    pid_header = b"%d" % os.getpid()

    def process(self) -> None:
        self.setHeader(WORKER_HEADER, self.pid_header)  # type: ignore[no-untyped-call]
        super().process()


def as_worker(service: GatewayService, fd: int) -> GatewayService:
    """Make ``service`` (a GatewayService) serve on the inherited socket ``fd``."""
    balance = accept_balance.from_environment(service.reactor, os.environ.get(INDEX_ENV))
    if balance is not None:  # long-lived connections spread evenly over the workers
        service.site.on_connections = balance.changed
    service.listen = InheritedSocketEndpoint(service.reactor, fd, balance)
    service.listen_description = f"inherited fd {fd}"
    WorkerRequest.pid_header = b"%d" % os.getpid()
    service.site.requestFactory = WorkerRequest
    return service


def _die_with_supervisor() -> None:
    """SIGTERM this worker when its supervisor dies, even by SIGKILL (Linux prctl)."""
    with contextlib.suppress(Exception):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor and os.getppid() != int(supervisor):
        os._exit(1)  # the supervisor died before prctl took effect


def worker_main() -> None:
    """A worker process: the ordinary daemon, in the foreground, on the inherited socket."""
    from twisted.scripts.twistd import run

    _die_with_supervisor()
    sys.argv = ["gatewayd-worker", "--nodaemon", "--pidfile=", "gateway", *sys.argv[1:]]
    run()


# -- the supervisor side ---------------------------------------------------------
