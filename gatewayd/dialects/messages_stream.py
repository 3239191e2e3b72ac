"""Chat ``chat.completion.chunk`` events in, Anthropic Messages stream events out."""

from __future__ import annotations

from typing import Any

from gatewayd.dialects.errors import anthropic_error
from gatewayd.dialects.messages import STOP_REASONS, message_id, usage_of
from gatewayd.dialects.stages import Translating, named_event


class MessagesStream(Translating):
    """``message_start``, content blocks (text, thinking, tool_use), ``message_delta``
    with the stop reason and usage, ``message_stop``; ``error`` when it broke off."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.model = model
        self.started = False
        self.finished = False
        self.block = -1  # index of the open content block, -1 when none
        self.block_kind = ""
        self.tools: dict[int, int] = {}  # chat tool_call index -> content block index
        self.stop_reason = "end_turn"

    def _start(self, obj: dict[str, Any]) -> list[bytes]:
        self.started = True
        message: dict[str, Any] = {
            "id": message_id(obj.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [
            named_event("message_start", {"type": "message_start", "message": message}),
            named_event("ping", {"type": "ping"}),
        ]

    def _close_block(self) -> list[bytes]:
        if self.block < 0 or not self.block_kind:
            return []
        self.block_kind = ""
        return [
            named_event("content_block_stop", {"type": "content_block_stop", "index": self.block})
        ]

    def _open(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close_block()
        self.block += 1
        self.block_kind = kind
        out.append(
            named_event(
                "content_block_start",
                {"type": "content_block_start", "index": self.block, "content_block": block},
            )
        )
        return out

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return named_event(
            "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        )

    def chunk(self, obj: dict[str, Any]) -> list[bytes]:
        out = [] if self.started else self._start(obj)
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                if self.block_kind != "thinking":
                    out += self._open(
                        "thinking", {"type": "thinking", "thinking": "", "signature": ""}
                    )
                out.append(
                    self._delta(self.block, {"type": "thinking_delta", "thinking": reasoning})
                )
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.block_kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta(self.block, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                out += self._tool(call)
            if choice.get("finish_reason"):
                reason = str(choice["finish_reason"])
                self.stop_reason = STOP_REASONS.get(reason, "end_turn")
        return out

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = int(call.get("index") or 0)
        fn = call.get("function") or {}
        if index not in self.tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": {},
            }
            out += self._open("tool_use", block)
            self.tools[index] = self.block
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            delta = {"type": "input_json_delta", "partial_json": args}
            out.append(self._delta(self.tools[index], delta))
        return out

    def finish(self) -> list[bytes]:
        if self.finished:
            return []
        self.finished = True
        out = [] if self.started else self._start({})
        out += self._close_block()
        usage = usage_of(self.usage)
        if self.tools and self.stop_reason == "end_turn":
            self.stop_reason = "tool_use"
        out.append(
            named_event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        out.append(named_event("message_stop", {"type": "message_stop"}))
        self.complete = True
        return out

    def fail(self, status: int, error: dict[str, Any]) -> bytes:
        if self.failed:  # an in-band error, then the broken stream's end: say it once
            return b""
        self.failed = self.finished = True  # no message_stop after an error
        return named_event("error", anthropic_error(status, error))
