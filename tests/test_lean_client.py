"""The lean HTTP/1.1 client against real loopback servers speaking raw bytes: framing,
headers, malformed answers, request serialisation (pooling: test_lean_client_pool.py)."""

from __future__ import annotations

from typing import Any

import pytest
from lean_server import CLOSE, Body, ScriptedServer, deferred_test, ok, until
from lean_server import server as server  # the fixture, found by its name
from twisted.internet.error import ConnectionRefusedError
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from gatewayd.config.tls import TLSSettings
from gatewayd.upstream.body import BodyCollector, BytesProducer
from gatewayd.upstream.http import UpstreamAgents
from gatewayd.upstream.leanhttp import MAX_HEAD
from gatewayd.upstream.pool import LeanAgent


def agent_for(server: ScriptedServer, **kw: Any) -> LeanAgent:
    from twisted.internet import reactor

    return LeanAgent(
        reactor, server.url, TLSSettings(), kw.get("max_idle", 8), kw.get("idle_timeout", 60)
    )


async def post(
    agent: LeanAgent, url: str, body: bytes = b'{"a":1}', headers: Headers | None = None
) -> IResponse:
    h = headers if headers is not None else Headers({b"content-type": [b"application/json"]})
    return await agent.request(b"POST", url.encode(), h, BytesProducer(body))


async def read(response: IResponse) -> tuple[bytes, Any]:
    body = Body()
    response.deliverBody(body)
    await body.ended
    return body.data, body.reason


@deferred_test
async def test_a_request_is_one_write_with_host_and_length(server: ScriptedServer) -> None:
    server.script = [ok(b"hello", b"X-Thing: 1\r\nx-thing: 2\r\n")]
    agent = agent_for(server)
    h = Headers({b"content-type": [b"application/json"], b"authorization": [b"Bearer k"]})
    response = await post(agent, server.url + "/v1/chat?x=1", b'{"a":1}', h)
    assert response.code == 200 and response.phrase == b"OK"
    assert response.version == (b"HTTP", 1, 1) and response.length == 5
    assert response.headers.getRawHeaders(b"x-thing") == [b"1", b"2"]
    data, reason = await read(response)
    assert data == b"hello" and reason.check(ResponseDone)
    (request,) = server.requests
    head, body = request.split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat?x=1 HTTP/1.1"
    assert lines[1] == b"Host: " + server.url.split("//")[1].encode()
    assert set(lines[2:]) == {
        b"Content-Type: application/json",
        b"Authorization: Bearer k",
        b"Content-Length: 7",
    }
    assert body == b'{"a":1}'


@deferred_test
async def test_a_callers_host_header_replaces_the_default(server: ScriptedServer) -> None:
    server.script = [ok()]
    agent = agent_for(server)
    response = await post(agent, server.url + "/", headers=Headers({b"host": [b"api.test"]}))
    await read(response)
    assert server.requests[0].split(b"\r\n")[1:3] == [b"Host: api.test", b"Content-Length: 7"]


@deferred_test
async def test_get_sends_no_body_and_no_length(server: ScriptedServer) -> None:
    server.script = [ok(b"x")]
    agent = agent_for(server)
    response = await agent.request(b"GET", (server.url + "/models").encode())
    assert (await read(response))[0] == b"x"
    assert server.requests[0].endswith(b"\r\n\r\n")
    assert b"content-length" not in server.requests[0].lower()


@deferred_test
async def test_a_chunked_body(server: ScriptedServer) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    server.script = [head + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"]
    agent = agent_for(server)
    data, reason = await read(await post(agent, server.url + "/"))
    assert data == b"abcde" and reason.check(ResponseDone)
    assert agent.connection_counts() == (0, 1)  # kept alive


@deferred_test
async def test_a_close_delimited_body_ends_with_potential_data_loss(server: ScriptedServer) -> None:
    def answer(transport: Any) -> None:
        transport.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        transport.loseConnection()

    server.script = [answer]
    agent = agent_for(server)
    data, reason = await read(await post(agent, server.url + "/"))
    assert data == b"all of it" and reason.check(PotentialDataLoss)
    assert agent.connection_counts() == (0, 0)


@deferred_test
async def test_interim_answers_are_skipped(server: ScriptedServer) -> None:
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    server.script = [early + ok(b"final", b"X-Final: y\r\n")]
    agent = agent_for(server)
    response = await post(agent, server.url + "/")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"x-final") == [b"y"]
    assert not response.headers.hasHeader(b"link")
    assert (await read(response))[0] == b"final"


@deferred_test
async def test_an_error_status_is_an_answer(server: ScriptedServer) -> None:
    server.script = [b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nContent-Length: 4\r\n\r\nbusy"]
    agent = agent_for(server)
    response = await post(agent, server.url + "/")
    assert response.code == 503 and response.headers.getRawHeaders(b"retry-after") == [b"2"]
    collector = BodyCollector(1024)
    response.deliverBody(collector)
    assert await collector.done == b"busy"


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2000 What\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEAD + 10),
    ],
)
@deferred_test
async def test_a_malformed_answer_fails_the_request(server: ScriptedServer, answer: bytes) -> None:
    server.script = [answer]
    agent = agent_for(server)
    with pytest.raises(ResponseFailed):
        await post(agent, server.url + "/")
    await until(lambda: len(server.lost) == 1, "the connection to be dropped")
    assert agent.connection_counts() == (0, 0)


@deferred_test
async def test_a_malformed_chunk_fails_the_body(server: ScriptedServer) -> None:
    server.script = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"]
    agent = agent_for(server)
    data, reason = await read(await post(agent, server.url + "/"))
    assert data == b"abc" and reason.check(ResponseFailed)
    await until(lambda: len(server.lost) == 1, "the connection to be dropped")


@deferred_test
async def test_a_body_cut_short_fails_with_response_failed(server: ScriptedServer) -> None:
    def answer(transport: Any) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        transport.loseConnection()

    server.script = [answer]
    agent = agent_for(server)
    data, reason = await read(await post(agent, server.url + "/"))
    assert data == b"abc" and reason.check(ResponseFailed)


@deferred_test
async def test_a_close_before_any_answer_is_response_never_received(
    server: ScriptedServer,
) -> None:
    server.script = [CLOSE]
    agent = agent_for(server)
    with pytest.raises(ResponseNeverReceived):
        await post(agent, server.url + "/")
    assert len(server.connections) == 1  # a new connection is not retried


@deferred_test
async def test_a_close_mid_headers_is_response_failed(server: ScriptedServer) -> None:
    def answer(transport: Any) -> None:
        transport.write(b"HTTP/1.1 200 OK\r\nContent-Ty")
        transport.loseConnection()

    server.script = [answer]
    agent = agent_for(server)
    with pytest.raises(ResponseFailed):
        await post(agent, server.url + "/")


@deferred_test
async def test_a_refused_connection_fails_the_request() -> None:
    s = ScriptedServer()
    url = s.url
    await s.stop()
    agent = agent_for(s)
    with pytest.raises(ConnectionRefusedError):
        await post(agent, url + "/")


@deferred_test
async def test_a_body_delivered_late_is_buffered(server: ScriptedServer) -> None:
    server.script = [ok(b"early")]
    agent = agent_for(server)
    response = await post(agent, server.url + "/")
    await until(lambda: agent.connection_counts() == (0, 1), "the answer to complete")
    data, reason = await read(response)
    assert data == b"early" and reason.check(ResponseDone)


@deferred_test
async def test_a_url_of_another_origin_is_refused(server: ScriptedServer) -> None:
    agent = agent_for(server)
    with pytest.raises(ValueError):
        await post(agent, "http://elsewhere.test/v1")


@deferred_test
async def test_a_url_that_would_break_the_request_line_is_refused(server: ScriptedServer) -> None:
    agent = agent_for(server)
    for bad in ("/v1 x", "/v1\r\nX-Injected: 1"):
        with pytest.raises(ValueError):
            await post(agent, server.url + bad)
    assert server.requests == []


def test_the_switch_picks_twisteds_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/v1"
    assert isinstance(UpstreamAgents(reactor=None).agent_for(url), LeanAgent)
    monkeypatch.setenv("GATEWAYD_UPSTREAM_CLIENT", "agent")
    agents = UpstreamAgents(reactor=None)
    assert agents.client == "agent"
    assert not isinstance(agents.agent_for(url), LeanAgent)
