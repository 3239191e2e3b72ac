"""The mock provider's answers past chat: speech, transcripts, images, moderation and
rerank, in OpenAI's (and Cohere's, for rerank) shapes, so that every endpoint answers
without a model server.

Speech is a real WAV file (a quiet 440 Hz tone, 8 kHz mono 16-bit, its length from
the text) played out in chunks through :class:`~gatewayd.providers.mock.MockStream`
(flow control included); images are a small valid PNG.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

from gatewayd.providers.base import Endpoint, EventStream, ProviderRequest, UpstreamResponse
from gatewayd.providers.media import wav_seconds
from gatewayd.providers.mock_input import invalid
from gatewayd.upstream.sse import data_event

#: Speech: samples per second, seconds per character of input (bounded), bytes per chunk.
SAMPLE_RATE = 8000
SECONDS_PER_CHAR = 0.02
MAX_SECONDS = 10.0
CHUNK = 4096
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
IMAGE_FORMATS = ("url", "b64_json")
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _json(payload: dict[str, Any], usage: dict[str, Any] | None = None) -> UpstreamResponse:
    return UpstreamResponse(200, body=json.dumps(payload).encode(), usage=usage)


def _text(body: str, ctype: bytes) -> UpstreamResponse:
    return UpstreamResponse(200, [(b"content-type", ctype)], body=body.encode())


# -- speech -------------------------------------------------------------------


def wav(seconds: float) -> bytes:
    """A valid mono 16-bit PCM WAV file of a quiet 440 Hz tone, ``seconds`` long."""
    return _wav_header(len(_samples(seconds))) + _samples(seconds)


def _samples(seconds: float) -> bytes:
    n = max(1, int(SAMPLE_RATE * seconds))
    step = 2 * math.pi * 440 / SAMPLE_RATE
    return struct.pack(f"<{n}h", *(int(3000 * math.sin(step * i)) for i in range(n)))


def _wav_header(data_bytes: int) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


#: One MPEG-1 Layer III frame of silence: 128 kbit/s, 44.1 kHz, mono, no CRC; 1152
#: samples. Its side information and main data are zeros: nothing to decode, silence.
MP3_FRAME = b"\xff\xfb\x90\xc0" + bytes(413)
MP3_FRAMES_PER_SECOND = 44100 / 1152


def mp3(seconds: float) -> bytes:
    """A valid MP3 stream of silence, ``seconds`` long."""
    return MP3_FRAME * max(1, round(seconds * MP3_FRAMES_PER_SECOND))


def speech(body: dict[str, Any]) -> tuple[list[bytes], bytes, float]:
    """The audio's chunks, its Content-Type and its length in seconds: ``mp3`` (the
    default) is MP3 silence, ``pcm`` raw samples, every other format WAV (the mock has no
    encoder for them), which players recognise by its header."""
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise invalid("'input' is a required property and must be a non-empty string.", "input")
    if not isinstance(body.get("voice"), str | dict):
        raise invalid("'voice' is a required property.", "voice")
    fmt = body.get("response_format", "mp3")
    if fmt not in SPEECH_FORMATS:
        raise invalid(
            f"Invalid value for 'response_format': expected one of {', '.join(SPEECH_FORMATS)}.",
            "response_format",
        )
    seconds = min(MAX_SECONDS, max(0.2, len(text) * SECONDS_PER_CHAR))
    if fmt == "pcm":
        audio, ctype = _samples(seconds), b"audio/pcm"
    elif fmt == "mp3":
        audio, ctype = mp3(seconds), b"audio/mpeg"
    else:
        audio, ctype = wav(seconds), b"audio/wav"
    return [audio[i : i + CHUNK] for i in range(0, len(audio), CHUNK)], ctype, seconds


# -- transcripts --------------------------------------------------------------


def _timestamp(seconds: float, comma: bool) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{',' if comma else '.'}{ms:03d}"


def transcript(
    text: str, fields: dict[str, Any], seconds: float, translate: bool
) -> UpstreamResponse | list[bytes]:
    """The transcript of an upload in its ``response_format``; with ``stream`` the SSE
    events (``transcript.text.delta`` ..., ``transcript.text.done``) instead."""
    fmt = fields.get("response_format") or "json"
    if fmt not in TRANSCRIPT_FORMATS:
        raise invalid(
            "Invalid value for 'response_format': expected one of "
            f"{', '.join(TRANSCRIPT_FORMATS)}.",
            "response_format",
        )
    usage = {"type": "duration", "seconds": max(1, math.ceil(seconds))}
    if str(fields.get("stream", "")).lower() == "true" and not translate:
        words = text.split(" ")
        events = [
            data_event(
                {"type": "transcript.text.delta", "delta": (" " if i else "") + w, "logprobs": None}
            )
            for i, w in enumerate(words)
        ]
        events.append(data_event({"type": "transcript.text.done", "text": text, "usage": usage}))
        return events
    if fmt == "text":
        return _text(text + "\n", b"text/plain; charset=utf-8")
    if fmt == "srt":
        cue = f"1\n{_timestamp(0, True)} --> {_timestamp(seconds, True)}\n{text}\n\n"
        return _text(cue, b"text/plain; charset=utf-8")
    if fmt == "vtt":
        cue = f"WEBVTT\n\n{_timestamp(0, False)} --> {_timestamp(seconds, False)}\n{text}\n\n"
        return _text(cue, b"text/vtt; charset=utf-8")
    if fmt == "verbose_json":
        segment = {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": seconds,
            "text": text,
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": -0.1,
            "compression_ratio": 1.0,
            "no_speech_prob": 0.0,
        }
        payload = {
            "task": "translate" if translate else "transcribe",
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [segment],
            "usage": usage,
        }
        return _json(payload)
    return _json({"text": text, "usage": usage} if not translate else {"text": text})


# -- images -------------------------------------------------------------------


def png(seed: bytes, size: int = 8) -> bytes:
    """A valid ``size`` x ``size`` RGB PNG whose colour comes from ``seed``."""
    r, g, b = hashlib.sha256(seed).digest()[:3]
    row = b"\x00" + bytes((r, g, b)) * size
    raw = row * size

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def images(fields: dict[str, Any], prompt_required: bool = True) -> UpstreamResponse:
    """``n`` images, each ``b64_json`` or a ``data:`` URL (``url``: the mock hosts no files)."""
    prompt = fields.get("prompt")
    if prompt_required and (not isinstance(prompt, str) or not prompt):
        raise invalid("'prompt' is a required property.", "prompt")
    try:
        n = int(fields.get("n") or 1)
    except (TypeError, ValueError):
        raise invalid("Invalid value for 'n': expected an integer.", "n") from None
    if not 1 <= n <= 10:
        raise invalid("Invalid value for 'n': expected an integer from 1 to 10.", "n")
    fmt = fields.get("response_format") or "b64_json"
    if fmt not in IMAGE_FORMATS:
        raise invalid(
            "Invalid value for 'response_format': expected 'url' or 'b64_json'.",
            "response_format",
        )
    data = []
    for i in range(n):
        encoded = base64.b64encode(png(f"{prompt}:{i}".encode())).decode()
        item: dict[str, Any] = (
            {"b64_json": encoded}
            if fmt == "b64_json"
            else {"url": "data:image/png;base64," + encoded}
        )
        if isinstance(prompt, str):
            item["revised_prompt"] = prompt
        data.append(item)
    return _json({"created": int(time.time()), "data": data})


# -- moderation and rerank ------------------------------------------------------


def _inputs(body: dict[str, Any], name: str) -> list[Any]:
    value = body.get(name)
    if isinstance(value, str | dict):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise invalid(f"'{name}' is a required property.", name)


def moderation(body: dict[str, Any], model: str) -> UpstreamResponse:
    """Nothing flagged, every category scored low, one result per input."""
    results = []
    for item in _inputs(body, "input"):
        kind = item.get("type", "text") if isinstance(item, dict) else "text"
        applied = ["image"] if kind == "image_url" else ["text"]
        results.append(
            {
                "flagged": False,
                "categories": {c: False for c in MODERATION_CATEGORIES},
                "category_scores": {c: 1e-5 for c in MODERATION_CATEGORIES},
                "category_applied_input_types": {c: applied for c in MODERATION_CATEGORIES},
            }
        )
    return _json({"id": "modr-" + uuid.uuid4().hex[:24], "model": model, "results": results})


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?").lower() for w in text.split() if w.strip(".,;:!?")}


def rerank(body: dict[str, Any]) -> UpstreamResponse:
    """Cohere's answer: documents scored by the share of the query's words they hold
    (deterministic), best first, cut to ``top_n``."""
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise invalid("'query' is a required property.", "query")
    documents = _inputs(body, "documents")
    top_n = body.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
        raise invalid("Invalid value for 'top_n': expected a positive integer.", "top_n")
    wanted = _words(query)
    scored = []
    for i, doc in enumerate(documents):
        text = doc.get("text", "") if isinstance(doc, dict) else str(doc)
        overlap = len(wanted & _words(text)) / (len(wanted) or 1)
        # A tie-breaker from the text keeps the order stable and the scores distinct.
        jitter = hashlib.sha256(text.encode()).digest()[0] / 25500.0
        scored.append((round(min(1.0, overlap * 0.98 + jitter), 6), i, text))
    scored.sort(key=lambda s: (-s[0], s[1]))
    results: list[dict[str, Any]] = []
    for score, index, text in scored[: top_n or len(scored)]:
        result: dict[str, Any] = {"index": index, "relevance_score": score}
        if body.get("return_documents"):
            result["document"] = {"text": text}
        results.append(result)
    tokens = sum(len(t.split()) for _, _, t in scored) + len(query.split())
    return _json(
        {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
            "usage": {"total_tokens": tokens},
        }
    )


#: The JSON-bodied endpoints answered here (the multipart ones need the upload).
JSON_ANSWERS: dict[Endpoint, Callable[[ProviderRequest, str], UpstreamResponse]] = {
    Endpoint.IMAGES: lambda r, model: images(r.body),
    Endpoint.MODERATIONS: lambda r, model: moderation(r.body, model),
    Endpoint.RERANK: lambda r, model: rerank(r.body),
}


def media_answer(
    request: ProviderRequest,
    model: str,
    text: str,
    play: Callable[[list[bytes]], EventStream],
) -> UpstreamResponse | None:
    """The mock's answer to a request past chat, or None for the chat family: ``text``
    is its transcript, ``play`` makes the stream that plays a list of chunks (speech
    audio, transcript events)."""
    answer = JSON_ANSWERS.get(request.endpoint)
    if answer is not None:
        return answer(request, model)
    if request.endpoint is Endpoint.SPEECH:
        chunks, ctype, _ = speech(request.body)
        return UpstreamResponse(200, [(b"content-type", ctype)], stream=play(chunks))
    if request.endpoint in (Endpoint.TRANSCRIPTIONS, Endpoint.TRANSLATIONS):
        audio = request.upload.first_file() if request.upload is not None else b""
        out = transcript(
            text, request.body, wav_seconds(audio), request.endpoint is Endpoint.TRANSLATIONS
        )
        if isinstance(out, list):
            return UpstreamResponse(
                200, [(b"content-type", b"text/event-stream")], stream=play(out)
            )
        return out
    if request.endpoint in (Endpoint.IMAGE_EDITS, Endpoint.IMAGE_VARIATIONS):
        return images(request.body, prompt_required=request.endpoint is Endpoint.IMAGE_EDITS)
    return None
