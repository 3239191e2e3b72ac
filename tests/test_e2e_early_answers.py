"""Early answers reach the client (issue 17): a request refused before its body is read
(headers too large 431, request target too long 414, a bad request line 400, a body
announced over the limit with ``Expect: 100-continue`` 413) is answered, and the
connection closed the way nginx's ``lingering_close`` does, so that a client still
sending its body reads the answer instead of a reset. Several clients in parallel, real
sockets, bodies in flight; both HTTP parsers."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import MASTER_KEY

from gatewayd.testing import GatewayProcess

BODY = 1024 * 1024  # sent after the head, while the answer is already on its way
LIMIT = 256 * 1024  # max_request_body_size
CHUNK = b"x" * 65536


@pytest.fixture(scope="module", params=["llhttp", "twisted"])
def gw(request: pytest.FixtureRequest) -> Iterator[GatewayProcess]:
    config = {
        "model_list": [{"model_name": "m", "params": {"model": "mock/m"}}],
        "general_settings": {"master_key": MASTER_KEY, "max_request_body_size": LIMIT},
    }
    env = {"GATEWAYD_SERVER_PARSER": "twisted"} if request.param == "twisted" else {}
    proc = GatewayProcess(config, env=env)
    proc.start()
    yield proc
    proc.stop()


def exchange(port: int, head: bytes, body: int = BODY) -> bytes:
    """As an HTTP client does: send ``head`` and ``body`` bytes, then read the answer
    until the server closes. A reset or broken pipe while sending is what a client
    reports instead of the answer (it never reads it): returned as ``b"send failed"``.
    The body goes once the answer has arrived: the server must still read it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        try:
            s.sendall(head)
            # The body is still in flight when the answer comes: waited for as an event
            # (bounded), not guessed with a sleep, so that every run tests that case.
            select.select([s], [], [], 10)
            sent = 0
            while sent < body:
                s.sendall(CHUNK)
                sent += len(CHUNK)
        except OSError as e:
            return b"send failed: " + str(e).encode()
        data = b""
        while True:
            try:
                got = s.recv(65536)
            except OSError as e:
                return data + b" | recv failed: " + str(e).encode()
            if not got:
                break
            data += got
        return data


def post_head(target: bytes, headers: bytes, length: int = BODY) -> bytes:
    return (
        b"POST "
        + target
        + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + headers
        + b"Content-Length: %d\r\n\r\n" % length
    )


CASES = {
    "headers_too_large": (
        post_head(b"/v1/chat/completions", b"Authorization: Bearer " + b"k" * 100_000 + b"\r\n"),
        b"431",
    ),
    "uri_too_long": (post_head(b"/v1/chat/completions?" + b"q" * 40_000, b""), b"414"),
    "bad_request_line": (b"NOT AN HTTP REQUEST LINE AT ALL\r\n", b"400"),
    "expect_over_limit": (
        post_head(b"/v1/chat/completions", b"Expect: 100-continue\r\n", LIMIT * 4),
        b"413",
    ),
}


def test_every_client_still_sending_gets_its_early_answer(gw: GatewayProcess) -> None:
    jobs = [name for name in CASES for _ in range(10)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda name: (name, exchange(gw.port, CASES[name][0])), jobs))
    wrong = []
    for name, data in answers:
        status = data[9:12]
        if not data.startswith(b"HTTP/1.1 ") or status != CASES[name][1] or b'"error"' not in data:
            wrong.append((name, data[:80]))
    assert not wrong, (
        f"{len(wrong)} of {len(answers)} clients did not read their answer: {wrong[:5]}"
    )
