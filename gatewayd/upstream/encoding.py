"""Upstream ``Content-Encoding``: decoded, so clients always get plain bytes.

The gateway asks for ``Accept-Encoding: identity``; an upstream (or a proxy in
front of it) that compresses anyway is decoded here: gzip, deflate and br. Any
other encoding is a bad upstream response that names it. The upstream's
``Content-Encoding`` and ``Content-Length`` never reach the client.
"""

from __future__ import annotations

import zlib
from typing import Any

from twisted.web.http_headers import Headers

try:  # brotli is a dependency, but a gateway without it still decodes gzip
    import brotli  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # pragma: no cover - depends on the installation
    brotli = None


class DecodingError(ValueError):
    """An encoding the gateway cannot decode, a corrupt body, or one that grew too big."""


class _Zlib:
    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._d: Any = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self._first = True

    def decode(self, data: bytes, max_out: int) -> bytes:
        if self._first and data and not self._gzip:
            self._first = False
            # "deflate" is zlib-wrapped by the RFC but raw deflate from some servers.
            if data[0] & 0x0F != 8 or ((data[0] << 8) | (data[1:2] or b"\0")[0]) % 31:
                self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        out: bytes = self._d.decompress(data, max_out + 1)
        if len(out) > max_out or self._d.unconsumed_tail:
            raise DecodingError(f"decoded upstream body larger than {max_out} bytes")
        return out


class _Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def decode(self, data: bytes, max_out: int) -> bytes:
        out: bytes = self._d.process(data)
        if len(out) > max_out:
            raise DecodingError(f"decoded upstream body larger than {max_out} bytes")
        return out


class Decoder:
    """Undoes a chain of content codings, read by read.

    ``decode`` raises :class:`DecodingError` for corrupt data or when one read
    decodes to more than ``max_out`` bytes (a compression bomb)."""

    def __init__(self, codings: list[str]) -> None:
        steps: list[_Zlib | _Brotli] = []
        for coding in reversed(codings):  # the last coding applied is undone first
            if coding in ("gzip", "x-gzip"):
                steps.append(_Zlib(gzip=True))
            elif coding == "deflate":
                steps.append(_Zlib(gzip=False))
            elif coding == "br" and brotli is not None:
                steps.append(_Brotli())
            else:
                raise DecodingError(
                    f"upstream answered with Content-Encoding: {coding}, "
                    "which the gateway cannot decode (it asks for identity)"
                )
        self._steps = steps

    def decode(self, data: bytes, max_out: int) -> bytes:
        try:
            for step in self._steps:
                data = step.decode(data, max_out)
        except DecodingError:
            raise
        except Exception as e:  # zlib.error, brotli.error: corrupt data
            raise DecodingError(f"upstream sent a corrupt compressed body: {e}") from None
        return data


def decoder_for(headers: Headers) -> Decoder | None:
    """The decoder an upstream response needs; None for identity.

    Raises :class:`DecodingError` for an encoding the gateway cannot decode."""
    raw = headers.getRawHeaders(b"content-encoding")
    if not raw:
        return None
    codings = [
        c.strip().lower()
        for value in raw
        for c in value.decode("latin-1").split(",")
        if c.strip() and c.strip().lower() != "identity"
    ]
    return Decoder(codings) if codings else None
