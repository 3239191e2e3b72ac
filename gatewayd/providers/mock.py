"""The built-in ``mock/<name>`` provider: answers in-process, no model server needed.

Params: ``mock_response`` (the text), ``mock_latency_ms`` (before the answer or
the first stream event), ``mock_stream_delay_ms`` (between stream events).
Streams go through the same relay as a real upstream's, flow control included.
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
    UpstreamResponse,
)
from gatewayd.providers.sse import DONE, data_event

DEFAULT_RESPONSE = "Hello! This is the gatewayd mock provider answering."
DEFAULT_STREAM_DELAY_MS = 20.0
EMBEDDING_DIMENSIONS = 16


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_tokens(body: dict[str, Any]) -> int:
    return max(
        1, len(json.dumps(body.get("messages", body.get("prompt", body.get("input", ""))))) // 4
    )


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

    def send(self, request: ProviderRequest, limits: AttemptLimits) -> Deferred[UpstreamResponse]:
        call: list[IDelayedCall] = []
        d: Deferred[UpstreamResponse] = Deferred(lambda _: call[0].cancel() if call else None)

        def answer() -> None:
            call.clear()
            d.callback(self._answer(request))

        if self.latency > 0:
            call.append(self._clock.callLater(self.latency, answer))
        else:
            answer()
        return d

    def _answer(self, request: ProviderRequest) -> UpstreamResponse:
        body = request.body
        created = int(time.time())
        model = self.deployment.model
        if request.endpoint is Endpoint.EMBEDDINGS:
            embeddings = self._embeddings(body)
            return UpstreamResponse(
                200, body=json.dumps(embeddings).encode(), usage=embeddings["usage"]
            )
        usage = {
            "prompt_tokens": _prompt_tokens(body),
            "completion_tokens": _tokens(self.text),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        chat = request.endpoint is Endpoint.CHAT
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if request.stream:
            stream_options = body.get("stream_options")
            include_usage = isinstance(stream_options, dict) and bool(
                stream_options.get("include_usage")
            )
            events = _stream_events(ident, created, model, self.text, chat, usage, include_usage)
            return UpstreamResponse(200, stream=MockStream(self._clock, events, self.stream_delay))
        if chat:
            payload: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.text},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        else:
            payload = {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "text": self.text, "logprobs": None, "finish_reason": "stop"}
                ],
                "usage": usage,
            }
        return UpstreamResponse(200, body=json.dumps(payload).encode(), usage=usage)

    def _embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("input", "")
        inputs = raw if isinstance(raw, list) else [raw]
        b64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vec = _vector(json.dumps(item))
            emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(_tokens(json.dumps(x)) for x in inputs)
        return {
            "object": "list",
            "data": data,
            "model": self.deployment.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


def _vector(text: str) -> list[float]:
    """A deterministic unit vector for ``text``: same input, same embedding."""
    digest = hashlib.sha256(text.encode()).digest()
    vals = [(b - 127.5) / 127.5 for b in digest[:EMBEDDING_DIMENSIONS]]
    norm = sum(v * v for v in vals) ** 0.5 or 1.0
    return [v / norm for v in vals]


def _stream_events(
    ident: str,
    created: int,
    model: str,
    text: str,
    chat: bool,
    usage: dict[str, int],
    include_usage: bool,
) -> list[bytes]:
    words = text.split(" ")
    pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
    obj = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: dict[str, Any] | str | None, finish: str | None) -> bytes:
        choice: dict[str, Any] = {"index": 0}
        if chat:
            choice["delta"] = delta
        else:
            choice["text"] = delta
        choice["logprobs"] = None
        choice["finish_reason"] = finish
        payload: dict[str, Any] = {
            "id": ident,
            "object": obj,
            "created": created,
            "model": model,
            "choices": [choice],
        }
        if include_usage:
            payload["usage"] = None
        return data_event(payload)

    events = []
    if chat:
        events.append(chunk({"role": "assistant", "content": ""}, None))
        events += [chunk({"content": p}, None) for p in pieces]
        events.append(chunk({}, "stop"))
    else:
        events += [chunk(p, None) for p in pieces]
        events.append(chunk("", "stop"))
    if include_usage:
        events.append(
            data_event(
                {
                    "id": ident,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        )
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
