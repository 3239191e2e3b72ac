"""The lean client's pool against real loopback servers: keep-alive reuse, the stale
connection retry, flow control, cancellation, idle timeout, bounds and stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lean_server import CLOSE, HANG, Body, ScriptedServer, deferred_test, ok, reactor, until
from lean_server import server as server  # the fixture, found by its name
from test_lean_client import agent_for, post, read
from twisted.internet.defer import CancelledError, gatherResults
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.ssl import PrivateCertificate
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived

from gatewayd.config.tls import TLSSettings
from gatewayd.testing.tlsfiles import make_tls_files
from gatewayd.upstream.body import BytesProducer
from gatewayd.upstream.pool import LeanAgent


@deferred_test
async def test_a_kept_alive_connection_is_reused(server: ScriptedServer) -> None:
    server.script = [ok(b"one"), ok(b"two")]
    agent = agent_for(server)
    assert (await read(await post(agent, server.url + "/a")))[0] == b"one"
    assert agent.connection_counts() == (0, 1)
    assert (await read(await post(agent, server.url + "/b")))[0] == b"two"
    assert len(server.connections) == 1 and len(server.connections[0].requests) == 2


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"x", b"Connection: close\r\n"),
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
        ok(b"x") + b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # an answer too many
    ],
)
@deferred_test
async def test_a_connection_that_cannot_be_kept_goes_back_closed(
    server: ScriptedServer, answer: bytes
) -> None:
    server.script = [answer, ok(b"y")]
    agent = agent_for(server)
    data, reason = await read(await post(agent, server.url + "/"))
    assert data == b"x" and reason.check(ResponseDone)
    assert agent.connection_counts() == (0, 0)
    await until(lambda: len(server.lost) == 1, "the connection to close")
    assert (await read(await post(agent, server.url + "/")))[0] == b"y"
    assert len(server.connections) == 2


@deferred_test
async def test_http10_keep_alive_is_kept(server: ScriptedServer) -> None:
    server.script = [b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"]
    agent = agent_for(server)
    await read(await post(agent, server.url + "/"))
    assert agent.connection_counts() == (0, 1)


@deferred_test
async def test_a_post_on_a_stale_pooled_connection_is_sent_again_once(
    server: ScriptedServer,
) -> None:
    server.script = [ok(b"first"), CLOSE, ok(b"again")]
    agent = agent_for(server)
    await read(await post(agent, server.url + "/"))
    data, _ = await read(await post(agent, server.url + "/", b'{"n":2}'))
    assert data == b"again"
    assert len(server.connections) == 2
    assert [r.endswith(b'{"n":2}') for r in server.requests] == [False, True, True]


@deferred_test
async def test_a_second_failure_after_the_retry_is_not_retried(server: ScriptedServer) -> None:
    server.script = [ok(), CLOSE, CLOSE]
    agent = agent_for(server)
    await read(await post(agent, server.url + "/"))
    with pytest.raises(ResponseNeverReceived):
        await post(agent, server.url + "/")
    assert len(server.requests) == 3 and len(server.connections) == 2


@deferred_test
async def test_no_retry_once_answer_bytes_arrived(server: ScriptedServer) -> None:
    def half(transport: Any) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\n")
        transport.loseConnection()

    server.script = [ok(), half, ok()]
    agent = agent_for(server)
    await read(await post(agent, server.url + "/"))
    with pytest.raises(ResponseFailed):
        await post(agent, server.url + "/")
    assert len(server.requests) == 2 and len(server.connections) == 1


@deferred_test
async def test_pausing_the_body_stops_reading_the_socket(server: ScriptedServer) -> None:
    size = 8 * 1024 * 1024
    server.script = [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size]
    agent = agent_for(server)
    response = await post(agent, server.url + "/")
    body = Body()
    response.deliverBody(body)
    transport: Any = body.transport
    transport.pauseProducing()
    await deferLater(reactor, 0.1, lambda: None)  # the rest of a read already made
    seen = len(body.data)
    await deferLater(reactor, 0.3, lambda: None)
    assert len(body.data) == seen < size  # nothing read while paused
    server_transport: Any = server.connections[0].transport
    assert server_transport.dataBuffer or server_transport._tempDataBuffer  # pushed back
    transport.resumeProducing()
    await body.ended
    assert len(body.data) == size and body.reason is not None
    assert body.reason.check(ResponseDone)
    assert agent.connection_counts() == (0, 1)


@deferred_test
async def test_stopping_the_body_closes_the_connection(server: ScriptedServer) -> None:
    server.script = [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc"]
    agent = agent_for(server)
    response = await post(agent, server.url + "/")
    body = Body()
    response.deliverBody(body)
    await until(lambda: body.data == b"abc", "the first bytes")
    transport: Any = body.transport
    transport.stopProducing()
    await body.ended
    assert body.reason is not None and body.reason.check(ResponseFailed)
    await until(lambda: len(server.lost) == 1, "the upstream connection to close")
    assert agent.connection_counts() == (0, 0)


@deferred_test
async def test_cancelling_before_the_answer_closes_the_connection(server: ScriptedServer) -> None:
    server.script = [HANG]
    agent = agent_for(server)
    d = agent.request(b"POST", (server.url + "/").encode(), None, BytesProducer(b"{}"))
    await until(lambda: len(server.requests) == 1, "the request to arrive")
    assert agent.connection_counts() == (1, 0)
    d.cancel()
    with pytest.raises(CancelledError):
        await d
    await until(lambda: len(server.lost) == 1, "the upstream connection to close")
    assert agent.connection_counts() == (0, 0)


def test_cancelling_while_connecting_is_connecting_cancelled() -> None:
    reactor = MemoryReactorClock()
    agent = LeanAgent(reactor, "http://127.0.0.1:9", TLSSettings(), 8, 60)
    d = agent.request(b"POST", b"http://127.0.0.1:9/v1", None, BytesProducer(b"{}"))
    assert [c[:2] for c in reactor.tcpClients] == [("127.0.0.1", 9)]
    failures: list[Any] = []
    d.addErrback(failures.append)
    d.cancel()
    assert len(failures) == 1 and failures[0].check(ConnectingCancelledError)


@deferred_test
async def test_idle_connections_close_after_the_timeout(server: ScriptedServer) -> None:
    server.script = [ok(), ok()]
    agent = agent_for(server, idle_timeout=0.2)
    await read(await post(agent, server.url + "/"))
    assert agent.connection_counts() == (0, 1)
    await until(lambda: len(server.lost) == 1, "the idle connection to close")
    assert agent.connection_counts() == (0, 0)


@deferred_test
async def test_at_most_max_idle_connections_are_kept(server: ScriptedServer) -> None:
    held: list[Any] = []
    server.script = [held.append, held.append, held.append]
    agent = agent_for(server, max_idle=2)
    ds = [agent.request(b"GET", (server.url + "/").encode()) for _ in range(3)]
    await until(lambda: len(held) == 3, "three requests in flight")
    assert agent.connection_counts() == (3, 0)
    for transport in held:
        transport.write(ok(b"z"))
    responses = await gatherResults(ds)
    for response in responses:
        await read(response)
    assert agent.connection_counts() == (0, 2)
    await until(lambda: len(server.lost) == 1, "the third connection to close")


@deferred_test
async def test_bytes_on_an_idle_connection_drop_it(server: ScriptedServer) -> None:
    server.script = [ok()]
    agent = agent_for(server)
    await read(await post(agent, server.url + "/"))
    server.connections[0].transport.write(b"HTTP/1.1 200 OK\r\n")  # type: ignore[union-attr]
    await until(lambda: agent.connection_counts() == (0, 0), "the connection to be dropped")


@deferred_test
async def test_close_closes_the_idle_connections(server: ScriptedServer) -> None:
    server.script = [ok()]
    agent = agent_for(server)
    await read(await post(agent, server.url + "/"))
    await agent.close()
    assert agent.connection_counts() == (0, 0)
    await until(lambda: len(server.lost) == 1, "the server to see the close")


@deferred_test
async def test_over_tls_connections_are_reused_and_pausing_reaches_the_socket(
    tmp_path: Path,
) -> None:
    files = make_tls_files(tmp_path)
    pem = files.server_cert.read_bytes() + files.server_key.read_bytes()
    tls_server = ScriptedServer(PrivateCertificate.loadPEM(pem).options())
    try:
        size = 4 * 1024 * 1024
        big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
        tls_server.script = [ok(b"one"), big]
        agent = LeanAgent(reactor, tls_server.url, TLSSettings(verify=str(files.ca)), 8, 60)
        assert (await read(await post(agent, tls_server.url + "/")))[0] == b"one"
        response = await post(agent, tls_server.url + "/")
        body = Body()
        response.deliverBody(body)
        transport: Any = body.transport
        transport.pauseProducing()
        await deferLater(reactor, 0.1, lambda: None)
        seen = len(body.data)
        await deferLater(reactor, 0.3, lambda: None)
        assert len(body.data) == seen < size
        transport.resumeProducing()
        await body.ended
        assert len(body.data) == size and body.reason is not None
        assert body.reason.check(ResponseDone)
        assert len(tls_server.connections) == 1 and agent.connection_counts() == (0, 1)
        await agent.close()
    finally:
        await tls_server.stop()
