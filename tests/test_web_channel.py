"""The client connection in memory: requests parsed by llhttp (GatewayChannel), and the
same behaviour from Twisted's parser (``GATEWAYD_SERVER_PARSER=twisted``) where both
are meant to agree: framing, pipelining, keep-alive, Expect, refusals, limits, timeouts,
disconnects and backpressure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gatewayd.config.model import GeneralSettings
from gatewayd.web.answering import TwistedChannel
from gatewayd.web.channel import GatewayChannel, channel_class
from gatewayd.web.request import GatewayRequest, GatewaySite


class _Echo(Resource):
    """Answers at once: the method, the path, the body and two headers."""

    isLeaf = True

    def render(self, request: GatewayRequest) -> bytes:
        assert request.content is not None
        body = request.content.read()
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {
                "method": request.method.decode(),
                "path": request.path.decode(),
                "body": body.decode("latin-1"),
                "x_a": (request.getHeader(b"x-a") or b"").decode(),
                "x_seq": (request.getHeader(b"x-seq") or b"").decode(),
                "args": {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
                "headers": sorted(
                    k.decode().lower() for k, _ in request.requestHeaders.getAllRawHeaders()
                ),
            }
        ).encode()


class _Later(Resource):
    """Answers when the test says so (an upstream taking its time)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.waiting: list[GatewayRequest] = []
        self.lost: list[GatewayRequest] = []

    def render(self, request: GatewayRequest) -> Any:
        self.waiting.append(request)
        request.on_lost = lambda: self.lost.append(request)
        return NOT_DONE_YET

    def answer(self, text: bytes = b"later") -> None:
        request = self.waiting.pop(0)
        request.setHeader(b"content-length", b"%d" % len(text))
        request.write(text)
        request.finish()


PARSERS = [GatewayChannel, TwistedChannel]


class Conn:
    def __init__(self, site: GatewaySite) -> None:
        proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert proto is not None
        self.proto = proto
        self.transport = StringTransport()
        proto.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def out(self) -> bytes:
        value: bytes = self.transport.value()
        return value


def responses(out: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The responses in ``out``, each (status, headers, body); bodies by content-length
    or chunked."""
    found = []
    while out:
        head, sep, rest = out.partition(b"\r\n\r\n")
        assert sep, out
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])
        }
        if status == 100:
            found.append((status, headers, b""))
            out = rest
            continue
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                body, rest = body + rest[:size], rest[size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            body, rest = rest[:length], rest[length:]
        found.append((status, headers, body))
        out = rest
    return found


@pytest.fixture
def clock() -> MemoryReactorClock:
    return MemoryReactorClock()


@pytest.fixture(params=PARSERS, ids=["llhttp", "twisted"])
def site(request: pytest.FixtureRequest, clock: MemoryReactorClock) -> Iterator[GatewaySite]:
    root = Resource()
    root.putChild(b"echo", _Echo())  # type: ignore[no-untyped-call]
    root.putChild(b"later", _Later())
    s = GatewaySite(
        root, lambda: GeneralSettings(max_request_body_size=1000), reactor=clock, timeout=30
    )
    s.channel_type = request.param
    yield s


def later(site: GatewaySite) -> _Later:
    resource: _Later = site.resource.children[b"later"]
    return resource


CHUNKED = (
    b"POST /echo HTTP/1.1\r\nHost: t\r\nX-A: one \t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: dropped\r\n\r\n"
)


def get(path: bytes, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    return (
        b"GET "
        + path
        + b" "
        + version
        + b"\r\nHost: t\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
    )


def post(body: bytes, *headers: bytes, path: bytes = b"/echo") -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return (
        b"POST "
        + path
        + b" HTTP/1.1\r\nHost: t\r\n"
        + head
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def test_the_default_parser_is_llhttp_and_twisted_on_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAYD_SERVER_PARSER", raising=False)
    assert channel_class() is GatewayChannel
    monkeypatch.setenv("GATEWAYD_SERVER_PARSER", "twisted")
    assert channel_class() is TwistedChannel
    site = GatewaySite(Resource(), lambda: GeneralSettings())
    assert site.channel_type is TwistedChannel
    assert isinstance(Conn(site).proto._channel, TwistedChannel)


def _check_chunked_echo(out: bytes) -> None:
    [(status, _, body)] = responses(out)
    assert status == 200
    got = json.loads(body)
    assert got["body"] == "hello, world" and got["x_a"] == "one" and got["method"] == "POST"
    assert got["headers"] == ["host", "transfer-encoding", "x-a"]  # the trailer dropped


@pytest.mark.parametrize("site", [GatewayChannel], indirect=True)
def test_a_chunked_body_split_at_every_byte_boundary(site: GatewaySite) -> None:
    for cut in range(1, len(CHUNKED)):
        conn = Conn(site)
        conn.send(CHUNKED[:cut])
        assert conn.out() == b"", cut  # nothing before the request is complete
        conn.send(CHUNKED[cut:])
        _check_chunked_echo(conn.out())


def test_a_chunked_body_one_byte_per_read(site: GatewaySite) -> None:
    conn = Conn(site)
    for i in range(len(CHUNKED)):
        conn.send(CHUNKED[i : i + 1])
    _check_chunked_echo(conn.out())


def test_content_length_body_split_across_reads_and_keep_alive(site: GatewaySite) -> None:
    conn = Conn(site)
    raw = post(b'{"a": 1}', b"X-Seq: 1")
    conn.send(raw[:30])
    conn.send(raw[30:-3])
    conn.send(raw[-3:])
    conn.send(post(b"second", b"X-Seq: 2"))
    got = [json.loads(body) for _, _, body in responses(conn.out())]
    assert [(g["x_seq"], g["body"]) for g in got] == [("1", '{"a": 1}'), ("2", "second")]
    assert not conn.transport.disconnecting


def test_three_pipelined_requests_in_one_read_answered_in_order(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(
        post(b"first", b"X-Seq: 1") + get(b"/later", b"X-Seq: 2") + post(b"third", b"X-Seq: 3")
    )
    # The first is answered at once; the second waits for its upstream; the third is
    # not answered before it (nor dispatched: the resource has one request waiting).
    [(status, _, body)] = responses(conn.out())
    assert status == 200 and json.loads(body)["body"] == "first"
    assert len(later(site).waiting) == 1
    later(site).answer(b"second")
    out = responses(conn.out())
    assert [b for _, _, b in out[1:2]] == [b"second"]
    assert json.loads(out[2][2])["x_seq"] == "3" and json.loads(out[2][2])["body"] == "third"
    assert len(out) == 3 and not conn.transport.disconnecting


def test_pipelined_behind_a_slow_request_waits_with_its_body(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(get(b"/later") + post(b"body-of-2", b"X-Seq: 2") + get(b"/later", b"X-Seq: 3"))
    assert conn.out() == b""
    later(site).answer(b"one")
    later(site).answer(b"three")
    got = responses(conn.out())
    assert [g[2] for g in got[:1]] == [b"one"]
    assert json.loads(got[1][2])["body"] == "body-of-2"
    assert got[2][2] == b"three"


def test_many_pipelined_requests_answered_at_once_do_not_recurse(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(get(b"/later") + get(b"/echo") * 1500)  # 1500 queued behind a slow one
    later(site).answer(b"first")
    got = responses(conn.out())
    assert len(got) == 1501 and {s for s, _, _ in got} == {200}


@pytest.mark.parametrize("site", [GatewayChannel], indirect=True)
def test_what_is_parsed_ahead_of_an_answer_is_bounded(site: GatewaySite) -> None:
    conn = Conn(site)
    small = get(b"/echo")
    conn.send(get(b"/later") + small * 3000)  # one read of ~90 KB
    channel = conn.proto._channel
    assert 0 < len(channel._ready) <= 16384 // len(small)  # the rest waits unparsed
    assert conn.transport.producerState == "paused"
    conn.send(small)  # more, while paused: waits too
    later(site).answer(b"first")
    got = responses(conn.out())
    assert len(got) == 3002 and got[0][2] == b"first" and {s for s, _, _ in got} == {200}
    assert conn.transport.producerState == "producing" and not channel._dataBuffer


def test_a_malformed_request_behind_a_slow_one_is_refused_in_its_turn(
    site: GatewaySite,
) -> None:
    conn = Conn(site)
    conn.send(get(b"/later") + b"GET /x HTTP/1.1\r\nno colon\r\n\r\n")
    assert conn.out() == b""  # nothing written into the first answer's place
    later(site).answer(b"first")
    first, refused = responses(conn.out())
    assert first[2] == b"first"
    assert refused[0] == 400 and refused[1][b"connection"] == b"close"
    assert json.loads(refused[2])["error"]["type"] == "invalid_request_error"
    assert conn.transport.disconnecting


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /a b c HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS to a plain port
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_requests_are_openai_json_400s_with_a_request_id(
    site: GatewaySite, raw: bytes
) -> None:
    conn = Conn(site)
    conn.send(raw)
    [(status, headers, body)] = responses(conn.out())
    assert status == 400
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close" and headers[b"x-request-id"]
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and "Traceback" not in body.decode()
    assert conn.transport.disconnecting
    conn.send(get(b"/echo"))  # nothing more is read
    assert len(responses(conn.out())) == 1


@pytest.mark.parametrize("order", ["te-first", "cl-first"])
def test_transfer_encoding_with_content_length_is_refused(site: GatewaySite, order: str) -> None:
    te, cl = b"Transfer-Encoding: chunked", b"Content-Length: 5"
    first, second = (te, cl) if order == "te-first" else (cl, te)
    conn = Conn(site)
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\n" + first + b"\r\n" + second + b"\r\n\r\n"
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
    )
    [(status, _headers, body)] = responses(conn.out())
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    assert conn.transport.disconnecting


@pytest.mark.parametrize("site", [GatewayChannel], indirect=True)
@pytest.mark.parametrize("split", [False, True])
def test_headers_too_large_are_a_json_431(site: GatewaySite, split: bool) -> None:
    conn = Conn(site)
    raw = get(b"/echo", b"X-Big: " + b"v" * 20000)
    if split:  # one header gathered over many reads: refused before it is whole
        for i in range(0, len(raw) - 100, 1000):
            conn.send(raw[i : i + 1000])
    else:
        conn.send(raw)
    [(status, headers, body)] = responses(conn.out())
    assert status == 431 and headers[b"content-type"] == b"application/json"
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert conn.transport.disconnecting


@pytest.mark.parametrize("site", [GatewayChannel], indirect=True)
def test_too_many_headers_and_a_too_long_target_are_refused(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(get(b"/echo", *[b"X-%d: v" % i for i in range(501)]))
    assert responses(conn.out())[0][0] == 431
    conn = Conn(site)
    conn.send(get(b"/echo?" + b"q" * 17000))
    [(status, _, body)] = responses(conn.out())
    assert status == 414 and json.loads(body)["error"]["code"] == "uri_too_long"


def test_headers_just_within_the_limits_pass(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(get(b"/echo", b"X-A: " + b"v" * 12000, *[b"X-%d: v" % i for i in range(300)]))
    [(status, _, body)] = responses(conn.out())
    assert status == 200 and json.loads(body)["x_a"] == "v" * 12000


def test_expect_continue_within_the_limit_gets_100_then_the_answer(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
    )
    assert conn.out() == b"HTTP/1.1 100 Continue\r\n\r\n"
    conn.send(b"body")
    got = responses(conn.out())
    assert [s for s, _, _ in got] == [100, 200] and json.loads(got[1][2])["body"] == "body"


def test_expect_continue_over_the_limit_is_a_413_before_the_upload(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n"
    )
    [(status, _headers, body)] = responses(conn.out())
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
    assert conn.transport.disconnecting


@pytest.mark.parametrize("site", [GatewayChannel], indirect=True)
def test_expect_continue_behind_a_slow_request_waits_for_its_turn(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(
        get(b"/later")
        + b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    assert conn.out() == b""  # not into the first answer
    later(site).answer(b"first")
    assert conn.out().endswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    conn.send(b"ok")
    assert [s for s, _, _ in responses(conn.out())] == [200, 100, 200]


def test_a_body_over_the_limit_is_dropped_and_answered_by_the_resource(
    site: GatewaySite,
) -> None:
    conn = Conn(site)
    conn.send(post(b"x" * 3000))
    [(status, _, body)] = responses(conn.out())
    assert status == 200 and json.loads(body)["body"] == ""  # dropped, not stored
    request_seen = conn.proto._channel
    assert request_seen.requests == []


@pytest.mark.parametrize(
    ("version", "connection", "closes"),
    [
        (b"HTTP/1.0", None, True),
        (b"HTTP/1.0", b"Connection: keep-alive", True),  # HTTPChannel: never for 1.0
        (b"HTTP/1.1", b"Connection: close", True),
        (b"HTTP/1.1", b"Connection: keep-alive", False),
        (b"HTTP/1.1", None, False),
    ],
)
def test_persistence(
    site: GatewaySite, version: bytes, connection: bytes | None, closes: bool
) -> None:
    conn = Conn(site)
    extra = (connection,) if connection else ()
    conn.send(get(b"/echo", *extra, version=version) + get(b"/echo", b"X-Seq: 2"))
    got = responses(conn.out())
    assert conn.transport.disconnecting is closes
    assert len(got) == (1 if closes else 2)  # what follows a last request is dropped
    assert conn.out().startswith(version + b" 200")


def test_head_options_star_and_absolute_form(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(b"HEAD /echo HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"\r\n\r\n" in conn.out() and conn.out().endswith(b"\r\n\r\n")  # no body
    conn = Conn(site)
    conn.send(b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
    assert conn.out().startswith(b"HTTP/1.1 200")
    conn = Conn(site)
    conn.send(get(b"http://gw.test:4000/echo?x=1&y=&x=2"))
    got = json.loads(responses(conn.out())[0][2])
    assert got["path"] == "/echo" and got["args"] == {"x": ["1", "2"], "y": [""]}
    conn = Conn(site)
    conn.send(get(b"/echo?"))
    got = json.loads(responses(conn.out())[0][2])
    assert got["path"] == "/echo" and got["args"] == {}


def test_an_upgrade_request_is_answered_as_a_plain_one(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(get(b"/echo", b"Connection: Upgrade", b"Upgrade: h2c") + get(b"/echo", b"X-Seq: 2"))
    got = responses(conn.out())
    assert [s for s, _, _ in got] == [200, 200] and json.loads(got[1][2])["x_seq"] == "2"


def test_a_client_gone_mid_request_reaches_the_request(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(get(b"/later"))
    waiting = later(site).waiting[0]
    assert site.active_requests == 1 and site.open_connections == 1
    conn.proto.connectionLost(Failure(ConnectionError("gone")))
    assert later(site).lost == [waiting]
    assert site.active_requests == 0 and site.open_connections == 0


def test_the_idle_timeout_closes_only_an_idle_connection(
    site: GatewaySite, clock: MemoryReactorClock
) -> None:
    conn = Conn(site)
    conn.send(get(b"/later"))
    clock.advance(60)  # a request in progress: no idle timeout
    assert not conn.transport.disconnecting
    later(site).answer()
    clock.advance(29)
    conn.send(get(b"/echo"))  # activity resets the timer
    clock.advance(29)
    assert not conn.transport.disconnecting
    clock.advance(2)
    assert conn.transport.disconnecting


def test_idle_time_counts_from_the_end_of_the_answer(
    site: GatewaySite, clock: MemoryReactorClock
) -> None:
    conn = Conn(site)
    clock.advance(20)
    conn.send(get(b"/later"))
    clock.advance(45)  # a long answer: the timer fired while it ran
    later(site).answer()
    clock.advance(29)
    assert not conn.transport.disconnecting
    clock.advance(2)
    assert conn.transport.disconnecting


def test_reading_pauses_when_a_client_pipelines_without_reading(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(get(b"/later"))
    assert conn.transport.producerState == "producing"
    conn.send(post(b"x" * 900) * 20)  # ~20 KiB behind a request still answered
    assert conn.transport.producerState == "paused"
    later(site).answer()
    assert conn.transport.producerState == "producing"
    assert len(responses(conn.out())) == 21


def test_a_full_send_buffer_pauses_the_request_producer(site: GatewaySite) -> None:
    conn = Conn(site)
    conn.send(get(b"/later"))
    request = later(site).waiting[0]
    events: list[str] = []

    class Producer:
        def pauseProducing(self) -> None:
            events.append("pause")

        def resumeProducing(self) -> None:
            events.append("resume")

        def stopProducing(self) -> None:
            events.append("stop")

    request.registerProducer(Producer(), True)
    channel = conn.proto._channel
    channel.pauseProducing()  # the transport's buffer is full
    channel.resumeProducing()
    channel.stopProducing()
    request.unregisterProducer()
    assert events == ["pause", "resume", "stop"]
    # A streamed answer (no length) is chunked, through the channel.
    request.write(b"data: 1\n\n")
    request.finish()
    [(_status, headers, body)] = responses(conn.out())
    assert headers[b"transfer-encoding"] == b"chunked" and body == b"data: 1\n\n"
