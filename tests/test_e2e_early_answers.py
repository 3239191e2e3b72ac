"""Early answers reach the client: a request refused before its body was read (headers
too large, a target too long, a bad request line, a body announced over the limit) is
answered while the client is still sending, and the connection is closed the way
nginx's lingering close does it, so that no reset overtakes the answer. Real sockets,
several clients in parallel, bodies still in flight."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable

import pytest
from conftest import MASTER_KEY, GatewayFactory, openai_entry

from gatewayd.testing import FakeUpstream

#: The body each client is still sending when the answer comes.
BODY = json.dumps(
    {"model": "m", "messages": [{"role": "user", "content": "x" * (1024 * 1024)}]}
).encode()
CLIENTS = 3
ROUNDS = 6


def head(target: bytes, *headers: bytes, length: int = len(BODY)) -> bytes:
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: gw", b"Content-Type: application/json"]
    lines += [*headers, b"Content-Length: %d" % length]
    return b"\r\n".join(lines) + b"\r\n\r\n"


CASES: dict[str, tuple[bytes, int]] = {
    "headers too large": (
        head(b"/v1/chat/completions", b"Authorization: Bearer " + b"k" * 100_000),
        431,
    ),
    "target too long": (head(b"/v1/chat/completions?q=" + b"a" * 20_000), 414),
    "bad request line": (b"POST /v1/chat/completions HTTP/1.1 extra\r\nHost: gw\r\n\r\n", 400),
    "body over the limit, announced": (
        head(b"/v1/chat/completions", b"Expect: 100-continue", length=len(BODY)),
        413,
    ),
    "unknown key": (head(b"/v1/chat/completions", b"Authorization: Bearer sk-nope"), 401),
}


def one_request(port: int, request: bytes) -> str:
    """The status line the client read, or what went wrong instead. Like the usual HTTP
    clients, it reads the answer only once it has sent the whole request: a send that
    fails (a reset, a broken pipe) is the client's error, whatever the server wrote."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small send buffer keeps the body in flight when the answer comes, as on a busy
    # machine or a slow link (loopback's buffers would otherwise take it all at once).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    sock.settimeout(30)
    try:
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(request + BODY)  # without waiting for 100 Continue, as many do
        except OSError as e:
            return f"{type(e).__name__} while sending"
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            return f"{type(e).__name__} while reading"
        return data.split(b"\r\n", 1)[0].decode("latin-1") if data else "nothing read"
    finally:
        sock.close()


def in_parallel(work: Callable[[], str], clients: int, rounds: int) -> list[str]:
    results: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(rounds):
            got = work()
            with lock:
                results.append(got)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client hung"
    return results


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_early_answer_reaches_clients_still_sending(
    gateway: GatewayFactory, upstream: FakeUpstream, case: str
) -> None:
    gw = gateway(
        {
            "model_list": [openai_entry("m", upstream)],
            "general_settings": {"master_key": MASTER_KEY, "max_request_body_size": 65536},
        }
    )
    request, status = CASES[case]
    results = in_parallel(lambda: one_request(gw.port, request), CLIENTS, ROUNDS)
    expected = f"HTTP/1.1 {status}"
    wrong = [r for r in results if not r.startswith(expected)]
    assert not wrong, f"{len(wrong)} of {len(results)} did not read {status}: {wrong[:5]}"
    assert upstream.count() == 0
