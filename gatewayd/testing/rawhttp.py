"""Reading raw HTTP answers off a socket in tests, every read bounded in time."""

from __future__ import annotations

import socket
import time


def _complete(data: bytes) -> bool:
    """One response whose ``Content-Length`` body has fully arrived."""
    head, sep, body = data.partition(b"\r\n\r\n")
    lower = head.lower()
    if not sep or b"content-length:" not in lower:
        return False
    length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
    return len(body) >= length


def read_response(
    sock: socket.socket,
    timeout: float = 10.0,
    *,
    until: bytes | None = None,
    whole_response: bool = False,
) -> bytes:
    """What ``sock`` receives until the peer closes (or resets) the connection, or
    ``timeout`` seconds pass, or ``until`` has arrived, or (``whole_response``) one
    response with a ``Content-Length`` is complete."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(max(0.01, left))
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        chunks.append(chunk)
        if until is not None or whole_response:
            data = b"".join(chunks)
            if (until is not None and until in data) or (whole_response and _complete(data)):
                break
    return b"".join(chunks)
