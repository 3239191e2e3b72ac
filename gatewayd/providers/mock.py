"""The built-in ``mock/<name>`` provider: answers in-process, no model server needed.

Params: ``mock_response`` (the text), ``mock_latency_ms`` (before the answer or
the first stream event), ``mock_stream_delay_ms`` (between stream events).
Streams go through the same relay as a real upstream's, flow control included.

It is a reference for client tests, so its answers have the fields and shapes
OpenAI's have (``refusal``, ``logprobs``, ``service_tier``, ``system_fingerprint``,
usage details), honour ``n``, ``max_tokens``, lists of prompts, token arrays,
``dimensions`` and ``encoding_format``, and refuse bad values with OpenAI's 400.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gatewayd.config.model import Deployment
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    EventStream,
    Provider,
    ProviderRequest,
    StreamSink,
    UpstreamFailure,
    UpstreamResponse,
)
from gatewayd.providers.mock_input import Item, flag, integer, invalid, items, token_count
from gatewayd.providers.mock_media import media_answer
from gatewayd.providers.mock_objects import MockObjects
from gatewayd.upstream.sse import DONE, data_event

DEFAULT_RESPONSE = "Hello! This is the gatewayd mock provider answering."
DEFAULT_STREAM_DELAY_MS = 20.0
EMBEDDING_DIMENSIONS = 16
#: OpenAI's own limits: ``n`` up to 128, embeddings up to 3072 dimensions.
MAX_N = 128
MAX_DIMENSIONS = 3072
SYSTEM_FINGERPRINT = "fp_gatewayd_mock"
SERVICE_TIER = "default"


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


#: What a null ``prompt`` means (OpenAI: "the model will generate as if from the
#: beginning of a new document").
END_OF_TEXT = "<|endoftext|>"


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(1, len(json.dumps(body.get("messages", ""))) // 4)


def _usage(prompt: int, completion: int, details: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if details:  # chat answers carry them; legacy completions do not
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


class MockProvider(Provider):
    """Answers chat, completions and embeddings from its config."""

    def __init__(self, deployment: Deployment, clock: IReactorTime) -> None:
        super().__init__(deployment)
        self._clock = clock
        extra = deployment.extra
        self.text: str = extra.get("mock_response") or DEFAULT_RESPONSE
        self.latency = float(extra.get("mock_latency_ms") or 0) / 1000.0
        delay = extra.get("mock_stream_delay_ms")
        self.stream_delay = (DEFAULT_STREAM_DELAY_MS if delay is None else float(delay)) / 1000.0
        self.objects = MockObjects()  # its files and batches

    def send(self, request: ProviderRequest, limits: AttemptLimits) -> Deferred[UpstreamResponse]:
        call: list[IDelayedCall] = []
        d: Deferred[UpstreamResponse] = Deferred(lambda _: call[0].cancel() if call else None)

        def answer() -> None:
            call.clear()
            try:
                response = self._answer(request)
            except UpstreamFailure as f:
                f.deployment = self.deployment.id
                d.errback(f)
            else:
                d.callback(response)

        if self.latency > 0:
            call.append(self._clock.callLater(self.latency, answer))
        else:
            answer()
        return d

    def _answer(self, request: ProviderRequest) -> UpstreamResponse:
        """The answer, or raises the :class:`UpstreamFailure` OpenAI's 400 would be."""
        body = request.body
        if request.endpoint in (Endpoint.FILES, Endpoint.BATCHES):  # mock_objects.py
            return self.objects.answer(request, self._run_line)
        media = media_answer(request, self.deployment.model, self.text, self._play)
        if media is not None:  # speech, images, moderation, rerank: mock_media.py
            return media
        if request.endpoint is Endpoint.EMBEDDINGS:
            embeddings = self._embeddings(body)
            return UpstreamResponse(
                200, body=json.dumps(embeddings).encode(), usage=embeddings["usage"]
            )
        chat = request.endpoint is Endpoint.CHAT
        n = integer(body, "n", 1, 1, MAX_N) or 1
        text, finish = self._text(body)
        if chat:
            prompts: list[Item] = [""]
            prompt_tokens = _prompt_tokens(body)
        else:
            prompts = items(body, "prompt", null=END_OF_TEXT)
            prompt_tokens = sum(token_count(p) for p in prompts)
        echo = not chat and flag(body, "echo")
        # One choice per prompt and per n, numbered as OpenAI does: prompt * n + j.
        texts = [
            (p if echo and isinstance(p, str) else "") + text for p in prompts for _ in range(n)
        ]
        usage = _usage(prompt_tokens, _tokens(text) * len(texts), chat)
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        head = {"id": ident, "created": int(time.time()), "model": self.deployment.model}
        if request.stream:
            stream_options = body.get("stream_options")
            include_usage = isinstance(stream_options, dict) and bool(
                stream_options.get("include_usage")
            )
            events = _stream_events(head, texts, finish, chat, usage if include_usage else None)
            return UpstreamResponse(200, stream=MockStream(self._clock, events, self.stream_delay))
        if chat:
            payload: dict[str, Any] = {
                **head,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": i,
                        "message": {
                            "role": "assistant",
                            "content": t,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                    for i, t in enumerate(texts)
                ],
                "usage": usage,
                "service_tier": SERVICE_TIER,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        else:
            payload = {
                **head,
                "object": "text_completion",
                "choices": [
                    {"index": i, "text": t, "logprobs": None, "finish_reason": finish}
                    for i, t in enumerate(texts)
                ],
                "usage": usage,
                "system_fingerprint": SYSTEM_FINGERPRINT,
            }
        return UpstreamResponse(200, body=json.dumps(payload).encode(), usage=usage)

    def _run_line(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        """One batch line's answer (the mock answering itself)."""
        return self._answer(ProviderRequest(endpoint, body)).body or b"{}"

    def _play(self, chunks: list[bytes]) -> MockStream:
        return MockStream(self._clock, chunks, self.stream_delay)

    def _text(self, body: dict[str, Any]) -> tuple[str, str]:
        """The answer text and its ``finish_reason``: cut to ``max_completion_tokens`` /
        ``max_tokens`` words (``length``) when that is fewer than the text has."""
        limit = integer(body, "max_completion_tokens", None, 1, 2**31)
        if limit is None:
            limit = integer(body, "max_tokens", None, 1, 2**31)
        words = self.text.split(" ")
        if limit is not None and limit < len(words):
            return " ".join(words[:limit]), "length"
        return self.text, "stop"

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = items(body, "input")
        size = integer(body, "dimensions", EMBEDDING_DIMENSIONS, 1, MAX_DIMENSIONS)
        assert size is not None
        encoding = body.get("encoding_format")
        if encoding not in (None, "float", "base64"):
            raise invalid(
                "Invalid value for 'encoding_format': expected 'float' or 'base64'.",
                "encoding_format",
            )
        data = []
        for i, item in enumerate(inputs):
            vec = _vector(json.dumps(item), size)
            emb: Any = vec
            if encoding == "base64":  # little-endian float32, as OpenAI sends it
                emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(token_count(x) for x in inputs)
        return {
            "object": "list",
            "data": data,
            "model": self.deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _vector(text: str, size: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic unit vector for ``text``: same input and size, same embedding."""
    digest = hashlib.sha256(text.encode()).digest()
    block = 1
    while len(digest) < size:  # more dimensions than one digest: hash on with a counter
        digest += hashlib.sha256(text.encode() + b"\0" + str(block).encode()).digest()
        block += 1
    vals = [(b - 127.5) / 127.5 for b in digest[:size]]
    norm = sum(v * v for v in vals) ** 0.5 or 1.0
    return [v / norm for v in vals]


def _stream_events(
    head: dict[str, Any],
    texts: list[str],
    finish: str,
    chat: bool,
    usage: dict[str, Any] | None,
) -> list[bytes]:
    """OpenAI's chunks: each carries one choice (``index`` says which), choices take turns;
    with ``include_usage`` every chunk has ``usage: null`` and a last chunk with no
    choices has the usage."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    extra: dict[str, Any] = {"system_fingerprint": SYSTEM_FINGERPRINT}
    if chat:
        extra["service_tier"] = SERVICE_TIER

    def chunk(index: int, piece: dict[str, Any] | str, finish_reason: str | None) -> bytes:
        choice: dict[str, Any] = {"index": index}
        choice["delta" if chat else "text"] = piece
        choice["logprobs"] = None
        choice["finish_reason"] = finish_reason
        payload: dict[str, Any] = {**head, "object": obj, "choices": [choice], **extra}
        if usage is not None:
            payload["usage"] = None
        return data_event(payload)

    split = [t.split(" ") for t in texts]
    pieces = [[w if i == 0 else " " + w for i, w in enumerate(words)] for words in split]
    events = []
    if chat:
        role = {"role": "assistant", "content": "", "refusal": None}
        events += [chunk(i, role, None) for i in range(len(texts))]
    for step in range(max(len(p) for p in pieces)):
        for i, mine in enumerate(pieces):
            if step < len(mine):
                events.append(chunk(i, {"content": mine[step]} if chat else mine[step], None))
    events += [chunk(i, {} if chat else "", finish) for i in range(len(texts))]
    if usage is not None:
        events.append(data_event({**head, "object": obj, "choices": [], **extra, "usage": usage}))
    events.append(DONE)
    return events


class MockStream(EventStream):
    """Plays a list of events at a fixed pace, honouring pause, resume and cancel."""

    def __init__(self, clock: IReactorTime, events: list[bytes], delay: float) -> None:
        self._clock = clock
        self._events = list(events)
        self._delay = delay
        self._sink: StreamSink | None = None
        self._call: IDelayedCall | None = None
        self._paused = False
        self._done = False

    def start(self, sink: StreamSink) -> None:
        self._sink = sink
        self._next()

    def _next(self) -> None:
        self._call = None
        if self._done or self._paused or self._sink is None:
            return
        if not self._events:
            self._done = True
            self._sink.end(None)
            return
        self._sink.event(self._events.pop(0))
        if not self._paused and not self._done:
            self._call = self._clock.callLater(self._delay if self._events else 0, self._next)

    def pause(self) -> None:
        self._paused = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def resume(self) -> None:
        if self._paused:
            self._paused = False
            if self._call is None:
                self._call = self._clock.callLater(0, self._next)

    def cancel(self) -> None:
        self._done = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
