"""Upstream answers that are not JSON: audio bytes streamed on, text transcripts
(``text``, ``srt``, ``vtt``) passed through whole, each with the upstream's
``Content-Type``. JSON answers (and SSE transcript streams) take the usual path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IResponse

from gatewayd.providers.base import Endpoint, ProviderRequest, UpstreamResponse
from gatewayd.upstream.bytestream import ByteStream
from gatewayd.upstream.encoding import Decoder

#: Endpoints whose success body may be something other than JSON.
MEDIA_ENDPOINTS = frozenset(
    {
        Endpoint.SPEECH,
        Endpoint.TRANSCRIPTIONS,
        Endpoint.TRANSLATIONS,
        Endpoint.IMAGES,
        Endpoint.IMAGE_EDITS,
        Endpoint.IMAGE_VARIATIONS,
        Endpoint.FILES,
    }
)


def is_file_content(request: ProviderRequest) -> bool:
    """``GET /files/{id}/content``: bytes to stream, never JSON to read."""
    return request.endpoint is Endpoint.FILES and (request.path or "").endswith("/content")


def _is_json(ctype: bytes) -> bool:
    return b"json" in ctype or not ctype


def media_answer(
    request: ProviderRequest,
    response: IResponse,
    passed: list[tuple[bytes, bytes]],
    clock: IReactorTime,
    idle_timeout: float,
    deployment: str,
    decoder: Decoder | None,
    collect: Callable[[], Deferred[bytes]],
) -> UpstreamResponse | Deferred[UpstreamResponse] | None:
    """The answer to a media request's 2xx ``response``, or None for the JSON (or SSE)
    path. ``collect`` reads the whole body (bounded) when it is to be passed on whole.

    Speech (any body that is not JSON or SSE) fires once its first bytes are in, with a
    started :class:`ByteStream`; a text transcript fires with the whole body."""
    if request.endpoint not in MEDIA_ENDPOINTS:
        return None
    raw_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
    ctype = raw_type.lower()
    # A file's content is bytes whatever its type says (JSONL is not one JSON object).
    content = is_file_content(request)
    if request.endpoint is Endpoint.FILES and not content:
        return None
    # Speech is bytes whatever its type (audio, or SSE audio deltas with stream_format).
    if (
        not content
        and request.endpoint is not Endpoint.SPEECH
        and (b"text/event-stream" in ctype or _is_json(ctype))
    ):
        return None
    headers = [*passed, (b"content-type", raw_type or b"application/octet-stream")]
    code = response.code
    if request.endpoint is Endpoint.SPEECH or content:  # audio, a file's bytes: streamed
        reader = ByteStream(clock, idle_timeout, deployment, decoder, empty_ok=content)
        response.deliverBody(reader)

        def started(_: Any) -> UpstreamResponse:
            return UpstreamResponse(code, headers, stream=reader)

        return reader.first_bytes.addCallback(started)
    return collect().addCallback(lambda body: UpstreamResponse(code, headers, body=body))


def wav_seconds(data: bytes) -> float:
    """The length of a WAV upload from its header; 1.0 for anything else."""
    if len(data) >= 44 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        byte_rate: int = struct.unpack("<I", data[28:32])[0]
        if byte_rate:
            return max(0.0, (len(data) - 44) / byte_rate)
    return 1.0
