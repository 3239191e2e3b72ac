"""One TCP connection attempt that leaves no reference cycle behind (issue 18).

What ``TCP4ClientEndpoint.connect`` does, without the objects it leaves in cycles once
the connection is over: its wrapping factory and Twisted's connector name each other,
the connector and its ``Client`` transport too, and a connection that failed keeps
``doRead``/``doWrite`` bound to itself. Each would be freed only by the cyclic
collector, whose full collections walk every open stream. Here the factory lets go of
the connector once the attempt is decided, and the connector of its transport once the
connection is over. No wrapping protocol either: the upstream's reads go to the
protocol directly (one call fewer per read).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConnector, IProtocol, IProtocolFactory
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure


def connect_tcp(
    reactor: Any, host: str, port: int, factory: IProtocolFactory, timeout: float
) -> Deferred[IProtocol]:
    """Connect to ``host:port`` (an IP address); fires with the protocol ``factory``
    built, once it is connected, or fails with the connect error."""
    attempt = _Attempt(reactor, factory)
    reactor.connectTCP(host, port, attempt, timeout=timeout)
    return attempt.deferred


def _forget(client: Any, names: tuple[str, ...]) -> None:
    """``client`` (Twisted's TCP transport) lets go of ``names``: its connector, or its
    methods bound to itself (left by a connection that never completed)."""
    for name in names:
        client.__dict__.pop(name, None)


class _Attempt(ClientFactory):
    noisy = False  # no "Starting factory" log line per connection

    def __init__(self, reactor: Any, factory: IProtocolFactory) -> None:
        self._reactor = reactor
        self._factory = factory
        self._connector: IConnector | None = None
        self._client: Any = None
        self._protocol: IProtocol | None = None
        self.deferred: Deferred[IProtocol] = Deferred(self._cancel)

    def startedConnecting(self, connector: IConnector) -> None:
        self._connector = connector
        # The transport, which the connector forgets before telling of a failure.
        self._client = getattr(connector, "transport", None)

    def buildProtocol(self, addr: Any) -> Any:
        self._connector = self._client = None  # decided: nothing left to cancel
        protocol = self._factory.buildProtocol(addr)
        if protocol is None:
            self._reactor.callLater(0, self._fail, Failure(net_error.NoProtocol()))
            return None
        self._protocol = protocol
        # The transport calls makeConnection right after this returns: fire after it.
        self._reactor.callLater(0, self._made)
        return protocol

    def _made(self) -> None:
        protocol, self._protocol = self._protocol, None
        if self.deferred.called or protocol is None:
            return
        if getattr(protocol, "transport", None) is None:
            self.deferred.errback(Failure(net_error.ConnectionLost()))
            return
        self.deferred.callback(protocol)

    def _fail(self, reason: Failure) -> None:
        if not self.deferred.called:
            self.deferred.errback(reason)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self._connector = None
        client, self._client = self._client, None
        # After the reactor's read or write call that failed it has returned (Twisted
        # deletes the transport's connector itself).
        if client is not None:
            self._reactor.callLater(0, _forget, client, ("doRead", "doWrite"))
        self._fail(reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        # Twisted's connection calls this last: the connector and its transport let go
        # of each other.
        client = getattr(connector, "transport", None)
        connector.transport = None  # type: ignore[attr-defined]
        _forget(client, ("connector",))
        if self._protocol is not None:  # lost before the attempt was announced
            self._protocol = None
            self._fail(reason)

    def _cancel(self, d: Deferred[IProtocol]) -> None:
        connector, self._connector = self._connector, None
        where = connector.getDestination() if connector is not None else None
        if not d.called:
            d.errback(Failure(net_error.ConnectingCancelledError(where)))
        if connector is not None:
            connector.stopConnecting()  # (its failure comes back to a fired Deferred)
