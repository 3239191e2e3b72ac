"""Upstream request headers: the JSON and Bearer defaults, and copies cheap enough
to make per attempt."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.web.http_headers import Headers, _nameEncoder

ACCEPT_ENCODING = _nameEncoder.encode(b"accept-encoding")


def copy_headers(headers: Headers) -> Headers:
    """A copy of ``headers`` to add to: ``Headers.copy`` re-encodes and re-checks every
    name and value, which a deployment's headers, checked once when built, do not need."""
    copy = Headers()
    copy._rawHeaders = {name: values[:] for name, values in headers._rawHeaders.items()}
    return copy


def bearer_headers(key: str | None, extra: Sequence[tuple[str, str]] = ()) -> Headers:
    """JSON request headers with ``Authorization: Bearer`` when there is a key."""
    h = Headers({b"content-type": [b"application/json"]})
    if key:
        h.setRawHeaders(b"authorization", [b"Bearer " + key.encode()])
    for k, v in extra:
        h.setRawHeaders(k.encode(), [v.encode()])
    return h
