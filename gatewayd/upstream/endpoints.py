"""Connecting to upstreams: TCP with fast failover between addresses, and TLS settings.

Twisted's ``HostnameEndpoint`` waits its whole attempt delay (0.3 s) after a refused
connection even when there is no other address to try, so a dead local server cost
0.3 s or more per deployment before its fallback. Here an IP literal is connected to
directly, and for a name the next address is tried as soon as one fails (and after
``ATTEMPT_DELAY`` if it is merely slow, as RFC 8305 says). A connection that cannot even
start (``EMFILE``: out of file descriptors) fails its Deferred at once.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from zope.interface import implementer

from gatewayd.upstream.tcp_connect import connect_tcp

#: Seconds before a second address is tried while the first is still connecting.
ATTEMPT_DELAY = 0.3
#: Seconds for one TCP connect.
CONNECT_TIMEOUT = 30


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@implementer(IStreamClientEndpoint)
class FastFailoverEndpoint:
    """TCP to ``host:port``: an IP literal directly, a name through ``resolve`` (the
    system resolver in a thread by default) with every address tried in turn."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        resolve: Callable[[str, int], Deferred[list[str]]] | None = None,
    ) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._literal = _ip_literal(host)
        self._resolve = resolve or (lambda h, p: getaddrinfo_in_thread(reactor, h, p))

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Fires with the connected protocol, or fails with the last connect error."""
        if self._literal is not None:
            return _Race(self._reactor, [self._literal.compressed], self._port).run(protocolFactory)
        try:
            resolved = self._resolve(self._host, self._port)
        except Exception:
            return fail()

        def race(found: list[str]) -> Deferred[IProtocol]:
            if not found:
                raise net_error.DNSLookupError(f"no address found for {self._host}")
            return _Race(self._reactor, found, self._port).run(protocolFactory)

        return resolved.addCallback(race)


def getaddrinfo_in_thread(reactor: Any, host: str, port: int) -> Deferred[list[str]]:
    """The addresses of ``host`` from the system resolver, in the reactor's thread pool.

    Twisted's resolver only catches ``gaierror``: out of file descriptors, getaddrinfo
    raises a plain OSError (EAI_SYSTEM), its Deferred fails unhandled and the connection
    attempt hangs until the timeout. Here every error fails the returned Deferred."""

    def lookup() -> list[str]:
        try:
            found = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except socket.gaierror:
            return []
        hosts: list[str] = []
        for family, _, _, _, sockaddr in found:
            if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in hosts:
                hosts.append(str(sockaddr[0]))
        return hosts

    try:
        return deferToThreadPool(reactor, reactor.getThreadPool(), lookup)
    except Exception:  # a thread pool that cannot start
        return fail()


class _Race:
    """Connection attempts to ``hosts`` in order; the first to connect wins."""

    def __init__(self, reactor: Any, hosts: list[str], port: int) -> None:
        self._reactor = reactor
        self._hosts = list(hosts)
        self._port = port
        self._pending: list[Deferred[IProtocol]] = []
        self._failures: list[Failure] = []
        self._timer: Any = None
        self._done = False
        self._winner: Deferred[IProtocol] = Deferred(self._cancel)

    def run(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self._factory = factory
        self._next()
        return self._winner

    def _next(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._hosts:
            self._maybe_fail()
            return
        host = self._hosts.pop(0)
        try:
            attempt = connect_tcp(self._reactor, host, self._port, self._factory, CONNECT_TIMEOUT)
        except Exception:  # endpoints fail their Deferred; be sure anyway
            attempt = fail()
        if self._hosts:
            self._timer = self._reactor.callLater(ATTEMPT_DELAY, self._next)
        self._pending.append(attempt)
        attempt.addCallbacks(self._won, self._lost, callbackArgs=(attempt,), errbackArgs=(attempt,))

    def _won(self, protocol: IProtocol, attempt: Deferred[IProtocol]) -> None:
        self._pending.remove(attempt)
        if self._done:
            return
        self._finish()
        self._winner.callback(protocol)

    def _lost(self, failure: Failure, attempt: Deferred[IProtocol]) -> None:
        self._pending.remove(attempt)
        if self._done:
            return
        self._failures.append(failure)
        if self._hosts:
            self._next()  # at once: a refusal is an answer, not a reason to wait
        else:
            self._maybe_fail()

    def _maybe_fail(self) -> None:
        if not self._pending and not self._done:
            self._finish()
            self._winner.errback(self._failures[-1])

    def _finish(self) -> None:
        self._done = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        for d in list(self._pending):
            d.cancel()

    def _cancel(self, _: Deferred[IProtocol]) -> None:
        self._finish()
        self._winner.errback(net_error.ConnectingCancelledError(None))
