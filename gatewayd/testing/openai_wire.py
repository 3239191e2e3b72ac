"""The OpenAI wire format :class:`~gatewayd.testing.upstream.FakeUpstream` answers in:
chat completions (plain and streamed), completions, embeddings, model objects."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from gatewayd.testing.behaviours import (
    _MODEL_CREATED,
    EXTRA_FIELD,
    SYSTEM_FINGERPRINT,
    RecordedRequest,
    _count_tokens,
    _split_words,
    _sse,
    _usage,
)


class OpenAIWire:
    """Builds OpenAI-shaped answers from the server's settings (``content``,
    ``embedding_dim``)."""

    content: str
    embedding_dim: int

    @staticmethod
    def embedding_for(item: str | Sequence[int], dim: int = 8) -> list[float]:
        """The deterministic embedding served for one input item.

        Values are multiples of 1/128 in [-1, 1), so they survive float32/base64 exactly.
        """
        key = item if isinstance(item, str) else json.dumps(list(item))
        digest = b""
        counter = 0
        while len(digest) < dim:
            digest += hashlib.sha256(f"{counter}:{key}".encode()).digest()
            counter += 1
        return [(b - 128) / 128 for b in digest[:dim]]

    @staticmethod
    def _lenient_json(record: RecordedRequest) -> dict[str, Any]:
        try:
            value = record.json()
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    @staticmethod
    def _model_object(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "fake"}

    def _completion_object(
        self,
        endpoint: str,
        request: Mapping[str, Any],
        model: str,
        content: str,
        finish_reason: str,
    ) -> dict[str, Any]:
        created = int(time.time())
        completion_tokens = len(_split_words(content))
        if endpoint == "chat":
            prompt_tokens = _count_tokens(request.get("messages"))
            return {
                "id": "chatcmpl-" + uuid.uuid4().hex[:24],
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": _usage(prompt_tokens, completion_tokens),
                "system_fingerprint": SYSTEM_FINGERPRINT,
                EXTRA_FIELD: {"kept": True},
            }
        prompt_tokens = _count_tokens(request.get("prompt"))
        return {
            "id": "cmpl-" + uuid.uuid4().hex[:24],
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"text": content, "index": 0, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": _usage(prompt_tokens, completion_tokens),
            "system_fingerprint": SYSTEM_FINGERPRINT,
            EXTRA_FIELD: {"kept": True},
        }

    def _stream_events(
        self,
        endpoint: str | None,
        request: Mapping[str, Any],
        model: str,
        pieces: Iterable[str],
        finish_reason: str,
    ) -> Iterator[bytes]:
        """Yield the SSE events (without ``[DONE]``) of a streamed chat or text completion."""
        options = request.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        created = int(time.time())
        text = endpoint == "completions"
        base: dict[str, Any] = {
            "id": ("cmpl-" if text else "chatcmpl-") + uuid.uuid4().hex[:24],
            "object": "text_completion" if text else "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

        def chunk(payload: Mapping[str, Any], finish: str | None) -> bytes:
            if text:
                choice = {"text": payload.get("content", ""), "index": 0, "logprobs": None}
            else:
                choice = {"index": 0, "delta": dict(payload), "logprobs": None}
            choice["finish_reason"] = finish
            obj = {**base, "choices": [choice]}
            if include_usage:
                obj["usage"] = None
            return _sse(obj)

        if not text:
            yield chunk({"role": "assistant", "content": "", "refusal": None}, None)
        completion_tokens = 0
        for piece in pieces:
            completion_tokens += 1
            yield chunk({"content": piece}, None)
        yield chunk({}, finish_reason)
        if include_usage:
            prompt = request.get("prompt") if text else request.get("messages")
            usage = _usage(_count_tokens(prompt), completion_tokens)
            yield _sse({**base, "choices": [], "usage": usage})

    def _embeddings_object(self, request: Mapping[str, Any], model: str) -> dict[str, Any]:
        raw_input = request.get("input")
        items: list[str | Sequence[int]]
        if isinstance(raw_input, str):
            items = [raw_input]
        elif (
            isinstance(raw_input, list) and raw_input and all(isinstance(x, int) for x in raw_input)
        ):
            items = [raw_input]
        elif isinstance(raw_input, list):
            items = [x if isinstance(x, (str, list)) else str(x) for x in raw_input]
        else:
            items = []
        dimensions = request.get("dimensions")
        dim = dimensions if isinstance(dimensions, int) and dimensions > 0 else self.embedding_dim
        as_base64 = request.get("encoding_format") == "base64"
        data: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            vector = self.embedding_for(item, dim)
            embedding: list[float] | str = vector
            if as_base64:
                packed = struct.pack(f"<{len(vector)}f", *vector)
                embedding = base64.b64encode(packed).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = _count_tokens(items)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
