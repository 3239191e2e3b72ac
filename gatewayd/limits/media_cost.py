"""Spend priced per unit other than a token: per request, per second of audio, per
character of speech, per image (LiteLLM's ``input_cost_per_second``,
``input_cost_per_character``, ``output_cost_per_image``...; see
:data:`gatewayd.config.endpoints.UNIT_PRICES`).

Counted when the answer is complete, from what the request and its answer say: the
speech ``input``'s characters; a transcript's ``usage.seconds`` or ``duration`` (else
a WAV upload's length from its header); the images in an answer's ``data``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gatewayd.config.model import Deployment
from gatewayd.providers.base import Endpoint, ProviderRequest, UpstreamResponse
from gatewayd.providers.media import wav_seconds

_IMAGES = (Endpoint.IMAGES, Endpoint.IMAGE_EDITS, Endpoint.IMAGE_VARIATIONS)
_AUDIO_IN = (Endpoint.TRANSCRIPTIONS, Endpoint.TRANSLATIONS)


def _answer(response: UpstreamResponse) -> Mapping[str, Any]:
    if response.body is None:
        return {}
    try:
        obj = json.loads(response.body)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def audio_seconds(call: ProviderRequest, response: UpstreamResponse) -> float:
    """Seconds of audio a transcript was made of: as the answer says, else the upload's."""
    usage = response.usage or _answer(response).get("usage")
    if isinstance(usage, Mapping) and isinstance(usage.get("seconds"), int | float):
        return float(usage["seconds"])
    duration = _answer(response).get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        return float(duration)
    if call.upload is not None:
        return wav_seconds(call.upload.first_file())
    return 0.0


#: MPEG-1 Layer III bit rates (kbit/s) by the header's index.
_MP3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0)
#: OpenAI's ``pcm``: 24 kHz, 16-bit, mono.
_PCM_BYTES_PER_SECOND = 48_000


def speech_seconds(response: UpstreamResponse) -> float:
    """Seconds of speech in a streamed answer, from its bytes and type: WAV by its
    header, PCM at OpenAI's 24 kHz, MP3 by its first frame's bit rate (constant bit
    rate, as TTS services send); 0 for anything else."""
    stream = response.stream
    size = getattr(stream, "received", 0)
    head: bytes = getattr(stream, "head", b"")
    ctype = b""
    for name, value in response.headers:
        if name.lower() == b"content-type":
            ctype = value.lower()
    if not size:
        return 0.0
    if len(head) >= 44 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        byte_rate = int.from_bytes(head[28:32], "little")
        return max(0, size - 44) / byte_rate if byte_rate else 0.0
    if b"pcm" in ctype:
        return size / _PCM_BYTES_PER_SECOND
    if (b"mpeg" in ctype or b"mp3" in ctype) and len(head) >= 3 and head[0] == 0xFF:
        kbps = _MP3_KBPS[head[2] >> 4]
        return size * 8 / (kbps * 1000) if kbps else 0.0
    return 0.0


def unit_cost(deployment: Deployment, call: ProviderRequest, response: UpstreamResponse) -> float:
    """USD for one answered request at the deployment's unit prices (0 when it has none)."""
    prices = deployment.unit_prices
    if not prices:
        return 0.0
    usd = prices.get("input_cost_per_request", 0.0) + prices.get("input_cost_per_query", 0.0)
    endpoint = call.endpoint
    if endpoint is Endpoint.SPEECH:
        text = call.body.get("input")
        if isinstance(text, str):
            usd += len(text) * prices.get("input_cost_per_character", 0.0)
        if "output_cost_per_second" in prices:
            usd += speech_seconds(response) * prices["output_cost_per_second"]
    elif endpoint in _AUDIO_IN and "input_cost_per_second" in prices:
        usd += audio_seconds(call, response) * prices["input_cost_per_second"]
    elif endpoint in _IMAGES and "output_cost_per_image" in prices:
        data = _answer(response).get("data")
        if isinstance(data, list):
            usd += len(data) * prices["output_cost_per_image"]
    return usd
