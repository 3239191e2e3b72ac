"""The llhttp-parsed client connection on real sockets: the installed daemon with a fake
upstream that records what it was sent; UNIX sockets and TLS in process."""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import pytest_twisted
from conftest import GatewayFactory, openai_entry
from twisted.web.resource import Resource
from twisted.web.server import Request

from gatewayd.config.model import GeneralSettings
from gatewayd.testing import FakeUpstream
from gatewayd.testing.rawhttp import read_response
from gatewayd.testing.tlsfiles import make_tls_files
from gatewayd.web.channel import GatewayChannel
from gatewayd.web.request import GatewaySite


class _Echo(Resource):
    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        body: bytes = request.content.read()
        request.setHeader(b"content-length", b"%d" % len(body))
        return body


def chat(content: str) -> bytes:
    return json.dumps({"model": "a", "messages": [{"role": "user", "content": content}]}).encode()


def split_responses(out: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    found = []
    while out:
        head, _, rest = out.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        length = int(headers.get("content-length", "0"))
        found.append((int(lines[0].split(" ")[1]), headers, rest[:length]))
        out = rest[length:]
    return found


def test_pipelined_requests_with_chunked_and_split_bodies_answered_in_order(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("a", upstream)]})
    one, two, three = chat("one"), chat("two"), chat("three")
    data = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nx-request-id: r-1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, one[:10])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(one) - 10, one[10:])
        + b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nx-request-id: r-2\r\n"
        b"Content-Length: %d\r\n\r\n%s"
        % (len(two), two)
        + b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nx-request-id: r-3\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(three), three)
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The first request in pieces (some reads end mid-line), the rest in one send.
        cut = data.index(b"r-2") - 60
        for start in range(0, cut, 37):
            s.sendall(data[start : min(start + 37, cut)])
            time.sleep(0.005)
        s.sendall(data[cut:])
        out = read_response(s)
    answers = split_responses(out)
    assert [(status, h["x-request-id"]) for status, h, _ in answers] == [
        (200, "r-1"),
        (200, "r-2"),
        (200, "r-3"),
    ], out[:600]
    assert all(json.loads(body)["object"] == "chat.completion" for _, _, body in answers)
    assert answers[2][1].get("connection") == "close"
    sent = [json.loads(r.body)["messages"][0]["content"] for r in upstream.requests]
    assert sent == ["one", "two", "three"]


def test_oversized_headers_and_smuggling_are_json_refusals_on_a_real_socket(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("a", upstream)]})
    body = chat("x")
    cases = [
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Big: "
            + b"v" * 20000
            + b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
            431,
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % len(body),
            400,
        ),
    ]
    for raw, want in cases:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
            s.sendall(raw)
            out = read_response(s)
        [(status, headers, answer)] = split_responses(out)
        assert status == want and headers["content-type"] == "application/json"
        assert json.loads(answer)["error"]["type"] == "invalid_request_error"
        assert headers["x-request-id"] and headers["connection"] == "close"
    assert upstream.count() == 0


# -- UNIX sockets and TLS: the real reactor, in process ---------------------------------


def _talk(sock: socket.socket, data: bytes) -> bytes:
    with sock:
        sock.sendall(data)
        return read_response(sock)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_unix_sockets_and_tls_are_served_with_pipelining(tmp_path: Path) -> None:
    from twisted.internet import endpoints, reactor, threads

    root = Resource()
    root.putChild(b"echo", _Echo())  # type: ignore[no-untyped-call]
    site = GatewaySite(root, lambda: GeneralSettings())
    assert site.channel_type is GatewayChannel
    tls = make_tls_files(tmp_path)
    sock_path = tmp_path / "gw.sock"
    unix = await endpoints.serverFromString(reactor, f"unix:{sock_path}").listen(site)
    secure = await endpoints.serverFromString(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={tls.server_key}:certKey={tls.server_cert}",
    ).listen(site)
    requests = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n0\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 3\r\n\r\ntwo"
    )

    def over_unix() -> bytes:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(sock_path))
        return _talk(s, requests)

    def over_tls() -> bytes:
        ctx = ssl.create_default_context(cafile=str(tls.ca))
        raw = socket.create_connection(("127.0.0.1", secure.getHost().port), timeout=10)
        return _talk(ctx.wrap_socket(raw, server_hostname="127.0.0.1"), requests)

    try:
        for talk in (over_unix, over_tls):
            out = await threads.deferToThread(talk)
            answers = split_responses(out)
            assert [(s, b) for s, _, b in answers] == [(200, b"one"), (200, b"two")], out
    finally:
        await unix.stopListening()
        await secure.stopListening()
