"""A scripted HTTP/1.1 server on loopback for the lean client's tests: raw bytes out.

Each complete request (head and Content-Length body) takes the next action of the
script: bytes to write, ``CLOSE`` (drop the connection without an answer), ``HANG``
(say nothing), or a callable given the server-side transport.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

reactor: Any = _reactor

F = TypeVar("F", bound=Callable[..., Any])
deferred_test = cast(Callable[[F], F], pytest_twisted.ensureDeferred)
server_fixture = cast(Callable[..., Callable[[F], F]], pytest_twisted.async_yield_fixture)

CLOSE = "close"
HANG = "hang"
Action = bytes | str | Callable[[Any], None]


def ok(body: bytes = b'{"ok":true}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class _Conn(Protocol):
    def __init__(self, server: ScriptedServer) -> None:
        self.server = server
        self.buffer = b""
        self.requests: list[bytes] = []

    def connectionMade(self) -> None:
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            request = head + b"\r\n\r\n" + rest[:length]
            self.requests.append(request)
            self.server.requests.append(request)
            self.server.act(self)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.server.lost.append(self)


class ScriptedServer:
    """Listens on 127.0.0.1 (with TLS when given ``tls``: Twisted's server options)."""

    def __init__(self, tls: Any = None) -> None:
        self.script: list[Action] = []
        self.requests: list[bytes] = []
        self.connections: list[_Conn] = []
        self.lost: list[_Conn] = []
        factory = Factory.forProtocol(lambda: _Conn(self))
        factory.noisy = False
        if tls is None:
            self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        else:
            self.port = reactor.listenSSL(0, factory, tls, interface="127.0.0.1")
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port.getHost().port}"

    def act(self, conn: _Conn) -> None:
        action = self.script.pop(0) if self.script else HANG
        if isinstance(action, bytes):
            conn.transport.write(action)  # type: ignore[union-attr]
        elif action == CLOSE:
            conn.transport.loseConnection()  # type: ignore[union-attr]
        elif callable(action):
            action(conn.transport)

    def stop(self) -> Deferred[Any]:
        for conn in self.connections:
            if conn not in self.lost:
                conn.transport.abortConnection()  # type: ignore[union-attr]
        d: Deferred[Any] = self.port.stopListening()
        return d


async def until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Wait (bounded) for ``check()`` to hold."""
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


class Body(Protocol):
    """Collects a body and how it ended; ``ended`` fires (with None) at the end."""

    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None
        self.ended: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.reason = reason
        self.ended.callback(None)


@server_fixture()
async def server() -> AsyncIterator[ScriptedServer]:
    """A :class:`ScriptedServer` for one test (a fixture: import it by name)."""
    s = ScriptedServer()
    yield s
    await s.stop()
