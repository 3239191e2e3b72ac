"""Raw HTTP helpers for the cache's end-to-end tests: one request per connection, the
answer's headers and its HTTP chunks kept apart (a streamed hit must replay the same
chunk boundaries as the first answer)."""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class Answer:
    def __init__(self, status: int, headers: dict[str, str], chunks: list[bytes]) -> None:
        self.status = status
        self.headers = headers
        self.chunks = chunks

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def cache(self) -> str | None:
        return self.headers.get("x-gatewayd-cache")

    def events(self) -> list[bytes]:
        return [e for e in self.body.split(b"\n\n") if e.strip()]


def send(
    port: int,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    rcvbuf: int | None = None,
) -> socket.socket:
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Connection: close\r\n{extra}Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return s


def receive(s: socket.socket, timeout: float = 30.0) -> Answer:
    """Read to the peer's close (bounded), then split the head and the chunks."""
    deadline = time.monotonic() + timeout
    raw = bytearray()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no complete answer in time")
            s.settimeout(left)
            got = s.recv(1 << 20)
            if not got:
                break
            raw += got
    finally:
        s.close()
    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") != "chunked":
        return Answer(status, headers, [rest])
    chunks = []
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return Answer(status, headers, chunks)


def post(
    port: int, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Answer:
    return receive(send(port, path, body, headers))
