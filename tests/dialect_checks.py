"""Strict checks of what the gateway emits against the official SDKs' own types."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import anthropic.types as at
import openai.types.responses as rt
from pydantic import TypeAdapter

_MESSAGE_EVENT: TypeAdapter[Any] = TypeAdapter(at.RawMessageStreamEvent)
_RESPONSE_EVENT: TypeAdapter[Any] = TypeAdapter(rt.ResponseStreamEvent)


def sse(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    """(event name, data object) of each SSE event; comments skipped."""
    out: list[tuple[str | None, dict[str, Any]]] = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        name = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data and data != ["[DONE]"]:
            out.append((name, json.loads("\n".join(data))))
    return out


def check_message(body: bytes) -> at.Message:
    return at.Message.model_validate_json(body, strict=True)


def check_message_events(raw: bytes) -> list[Any]:
    """Every event validated; each ``event:`` line names its data's type."""
    events = []
    for name, data in sse(raw):
        assert name == data["type"], (name, data)
        if name == "ping":  # not in the SDK's event union: the SDK skips it
            assert data == {"type": "ping"}
            events.append(SimpleNamespace(type="ping"))
            continue
        if name == "error":
            assert set(data["error"]) >= {"type", "message"}, data
            events.append(SimpleNamespace(type="error", error=data["error"]))
            continue
        events.append(_MESSAGE_EVENT.validate_json(json.dumps(data), strict=True))
    return events


def check_response(body: bytes) -> rt.Response:
    return rt.Response.model_validate_json(body, strict=True)


def check_response_events(raw: bytes) -> list[Any]:
    events = []
    seqs = []
    for name, data in sse(raw):
        assert name == data["type"], (name, data)
        events.append(_RESPONSE_EVENT.validate_json(json.dumps(data), strict=True))
        seqs.append(data["sequence_number"])
    assert seqs == list(range(len(seqs))), seqs
    return events


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


def request(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> Reply:
    """One raw HTTP request, the answer read whole (streamed or not)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"content-type": "application/json", **(headers or {})}
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=data, headers=h)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def post(url: str, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return request("POST", url, body, headers)
