"""An early answer over TLS reaches a client still sending its body (issue 17). A TLS
transport cannot half-close; Twisted's TLS close goes on reading (and dropping) until
the peer's close_notify, so the plain close is kept there: this guards it. The real
reactor, in process, a real TLS socket."""

from __future__ import annotations

import select
import socket
import ssl
from pathlib import Path

import pytest_twisted
from twisted.web.resource import Resource

from gatewayd.config.model import GeneralSettings
from gatewayd.testing.rawhttp import read_response
from gatewayd.testing.tlsfiles import make_tls_files
from gatewayd.web.request import GatewaySite

HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Authorization: Bearer " + b"k" * 100_000 + b"\r\nContent-Length: 1048576\r\n\r\n"
)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_a_431_over_tls_reaches_a_client_still_sending(tmp_path: Path) -> None:
    from twisted.internet import endpoints, reactor, threads

    site = GatewaySite(Resource(), lambda: GeneralSettings())
    tls = make_tls_files(tmp_path)
    secure = await endpoints.serverFromString(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={tls.server_key}:certKey={tls.server_cert}",
    ).listen(site)

    def client() -> bytes:
        ctx = ssl.create_default_context(cafile=str(tls.ca))
        raw = socket.create_connection(("127.0.0.1", secure.getHost().port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(HEAD)
            select.select([s], [], [], 10)  # the answer has come; the body is still to go
            try:
                for _ in range(16):
                    s.sendall(b"x" * 65536)
            except OSError as e:
                return b"send failed: " + str(e).encode()
            return read_response(s, whole_response=True)

    try:
        for _ in range(5):
            out = await threads.deferToThread(client)
            assert out.startswith(b"HTTP/1.1 431 "), out[:120]
            assert b"headers_too_large" in out
    finally:
        await secure.stopListening()
