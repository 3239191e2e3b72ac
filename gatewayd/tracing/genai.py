"""GenAI semantic-convention attributes read from OpenAI-shaped bodies and streams.

Pure functions over the JSON the gateway already has in hand (no OpenTelemetry
import): :mod:`gatewayd.tracing.otel` puts what they return on spans. Prompt and completion
text only when ``capture`` says so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gatewayd.dialects.usage import Spent, event_usage, merge_usage

#: ``gen_ai.operation.name`` by endpoint path.
_OPERATIONS = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
    "messages": "chat",
    # The rest of the surface (docs/endpoints.md): the convention's generate_content
    # where it fits, custom names where none does.
    "audio/speech": "generate_content",
    "audio/transcriptions": "generate_content",
    "audio/translations": "generate_content",
    "images/generations": "generate_content",
    "images/edits": "generate_content",
    "images/variations": "generate_content",
    "moderations": "moderation",
    "rerank": "rerank",
    "files": "files",
    "batches": "batches",
}
#: ``gen_ai.provider.name`` (the convention's well-known values) by provider prefix.
_PROVIDERS = {
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "mistral": "mistral_ai",
    "xai": "x_ai",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "bedrock": "aws.bedrock",
    "watsonx": "ibm.watsonx.ai",
}
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')


def operation_for(path: str) -> str:
    """``gen_ai.operation.name`` for an endpoint path (``chat`` when unknown)."""
    for suffix, op in _OPERATIONS.items():
        if path.rstrip("/").endswith("/" + suffix) or path == suffix:
            return op
    return "chat"


def provider_name(prefix: str) -> str:
    """``gen_ai.provider.name``: the convention's well-known value, else the prefix."""
    return _PROVIDERS.get(prefix, prefix)


def request_attributes(body: Mapping[str, Any], capture: bool) -> dict[str, Any]:
    """Request parameters (``gen_ai.request.max_tokens`` ...), and the input when captured."""
    attrs: dict[str, Any] = {}
    for key, name in (
        ("max_tokens", "gen_ai.request.max_tokens"),
        ("max_completion_tokens", "gen_ai.request.max_tokens"),
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
    ):
        v = body.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            attrs[name] = v
    if capture:
        for key in ("messages", "prompt", "input"):
            if key in body:
                attrs["gen_ai.input.messages"] = json.dumps(body[key], ensure_ascii=False)
                break
    return attrs


def usage_attributes(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """``gen_ai.usage.input_tokens`` / ``output_tokens`` from any dialect's usage: every
    input token (Anthropic's cache reads and writes added), and the cache's share as
    ``gen_ai.usage.cache_read.input_tokens`` / ``cache_creation.input_tokens``."""
    spent = Spent.from_usage(usage)
    if spent is None:
        return {}
    out: dict[str, Any] = {
        "gen_ai.usage.input_tokens": spent.prompt,
        "gen_ai.usage.output_tokens": spent.completion,
    }
    if spent.cache_read:
        out["gen_ai.usage.cache_read.input_tokens"] = spent.cache_read
    if spent.cache_write:
        out["gen_ai.usage.cache_creation.input_tokens"] = spent.cache_write
    return out


def response_attributes(
    body: bytes | None, usage: Mapping[str, Any] | None, capture: bool
) -> dict[str, Any]:
    """What a JSON answer says: response model and id, finish reasons, usage, and the
    output when captured."""
    attrs = usage_attributes(usage)
    try:
        obj = json.loads(body) if body else None
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        if isinstance(obj.get("model"), str):
            attrs["gen_ai.response.model"] = obj["model"]
        if isinstance(obj.get("id"), str):
            attrs["gen_ai.response.id"] = obj["id"]
        choices = [c for c in obj.get("choices") or () if isinstance(c, dict)]
        reasons = [c["finish_reason"] for c in choices if isinstance(c.get("finish_reason"), str)]
        if reasons:
            attrs["gen_ai.response.finish_reasons"] = reasons
        if capture and choices:
            out = [c.get("message", c.get("text")) for c in choices]
            attrs["gen_ai.output.messages"] = json.dumps(out, ensure_ascii=False)
    return attrs


class StreamFacts:
    """What a chat-completion stream says in passing: model, usage, finish reasons, and
    whether ``data: [DONE]`` came. Parses only the events that can carry them."""

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.reasons: list[str] = []

    def read(self, data: bytes) -> None:
        """One or more SSE events, as relayed to the client."""
        if data.rstrip().endswith(b"[DONE]"):
            self.done = True
        if not (self.model is None or b'"usage"' in data or _FINISHED.search(data)):
            return
        for line in data.split(b"\n"):
            if not line.startswith(b"data:") or line.endswith(b"[DONE]"):
                continue
            try:
                obj = json.loads(line[5:])
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if self.model is None and isinstance(obj.get("model"), str):
                self.model = obj["model"]
            usage = event_usage(obj)
            if usage is not None:
                self.usage = merge_usage(self.usage, usage)
            for choice in obj.get("choices") or ():
                if isinstance(choice, dict) and isinstance(choice.get("finish_reason"), str):
                    self.reasons.append(choice["finish_reason"])

    def attributes(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"gen_ai.request.stream": True}
        if self.model:
            attrs["gen_ai.response.model"] = self.model
        if self.reasons:
            attrs["gen_ai.response.finish_reasons"] = self.reasons
        attrs.update(usage_attributes(self.usage))
        return attrs
