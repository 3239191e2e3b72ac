"""Anthropic Messages stream events in, OpenAI ``chat.completion.chunk`` events out:
the streaming half of the ``anthropic/`` provider's translation."""

from __future__ import annotations

import json
import time
from typing import Any

from gatewayd.dialects.anthropic_chat import STOP_REASONS, chat_usage
from gatewayd.upstream.sse import DONE, data_event, event_data

#: One decoder for every event (``json.loads`` of bytes detects their encoding each time).
_DECODE = json.JSONDecoder().decode


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` events out."""

    def __init__(self, include_usage: bool, forced_tool: str | None = None) -> None:
        self.include_usage = include_usage
        self.forced_tool = forced_tool
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        #: Anthropic's usage so far: ``message_start``'s, updated by ``message_delta``'s
        #: (the output count, and the input and cache counts when it repeats them).
        self.usage: dict[str, Any] = {}
        self.tool_index = -1
        self.block_tools: dict[int, int] = {}  # content block index -> tool call index
        self.structured_blocks: set[int] = set()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            payload["usage"] = None
        return data_event(payload)

    def __call__(self, event: bytes) -> list[bytes]:
        raw = event_data(event)
        if raw is None:
            return []
        try:
            data = _DECODE(raw.decode())
        except ValueError:  # (UnicodeDecodeError among them)
            return []
        kind = data.get("type")
        if kind == "message_start":
            msg = data.get("message") or {}
            self.id = msg.get("id", "")
            self.model = msg.get("model", "")
            self._note_usage(msg.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._delta(data)
        if kind == "message_delta":
            self._note_usage(data.get("usage"))
            reason = (data.get("delta") or {}).get("stop_reason")
            finish = STOP_REASONS.get(reason or "", "stop")
            if finish == "tool_calls" and self.structured_blocks and self.tool_index < 0:
                finish = "stop"
            return [self._chunk({}, finish)]
        if kind == "message_stop":
            out = []
            if self.include_usage:
                out.append(
                    data_event(
                        {
                            "id": self.id,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": self.model,
                            "choices": [],
                            "usage": chat_usage(self.usage),
                        }
                    )
                )
            out.append(DONE)
            return out
        if kind == "error":
            err = data.get("error") or {}
            error = {
                "message": err.get("message", "upstream error"),
                "type": err.get("type", "api_error"),
                "param": None,
                "code": None,
            }
            return [data_event({"error": error})]
        return []  # ping, content_block_stop, and event types added later

    @property
    def final_usage(self) -> dict[str, Any] | None:
        """The chat usage of what the upstream reported so far, whether or not the client
        asked for it (limits and spend count it either way); None before any."""
        return chat_usage(self.usage) if self.usage else None

    def _note_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.usage.update((k, v) for k, v in usage.items() if v is not None)

    def _block_start(self, data: dict[str, Any]) -> list[bytes]:
        block = data.get("content_block") or {}
        if block.get("type") != "tool_use":
            return []
        index = int(data.get("index", 0))
        if self.forced_tool is not None and block.get("name") == self.forced_tool:
            self.structured_blocks.add(index)
            return []
        self.tool_index += 1
        self.block_tools[index] = self.tool_index
        call = {
            "index": self.tool_index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _delta(self, data: dict[str, Any]) -> list[bytes]:
        delta = data.get("delta") or {}
        dkind = delta.get("type")
        if dkind == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if dkind == "thinking_delta":
            return [self._chunk({"reasoning_content": delta.get("thinking", "")})]
        if dkind == "signature_delta":  # needed to send the thinking back in a later turn
            return [self._chunk({"thinking_signature": delta.get("signature", "")})]
        if dkind == "input_json_delta":
            block = int(data.get("index", 0))
            if block in self.structured_blocks:
                return [self._chunk({"content": delta.get("partial_json", "")})]
            index = self.block_tools.get(block, self.tool_index)
            call = {"index": index, "function": {"arguments": delta.get("partial_json", "")}}
            return [self._chunk({"tool_calls": [call]})]
        return []
