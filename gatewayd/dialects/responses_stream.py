"""Chat ``chat.completion.chunk`` events in, OpenAI Responses stream events out."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from gatewayd.dialects.responses import finish, new_id, skeleton
from gatewayd.dialects.stages import Translating, named_event


class ResponsesStream(Translating):
    """``response.created``, ``response.in_progress``, output items with their deltas,
    ``response.completed``; ``error`` and ``response.failed`` when it broke off.

    ``on_done`` gets the final ``Response`` (for the store)."""

    def __init__(
        self,
        body: dict[str, Any],
        response_id: str,
        model: str,
        on_done: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self.response = skeleton(body, response_id, model)
        self.on_done = on_done
        self.seq = 0
        self.started = False
        self.finished = False
        self.finish_reason: str | None = None
        #: The open output item: its index in output, kind, accumulated text.
        self.item: dict[str, Any] | None = None
        #: The open item's text so far, in pieces (joined once, at its end).
        self.pieces: list[str] = []
        self.calls: dict[int, int] = {}  # chat tool_call index -> output index

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return named_event(kind, payload)

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.response)

    def _start(self) -> list[bytes]:
        self.started = True
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    def _index(self) -> int:
        return len(self.response["output"]) - 1

    def _open(self, item: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.response["output"].append(item)
        self.item = item
        self.pieces = []
        out.append(
            self._event(
                "response.output_item.added", output_index=self._index(), item=copy.deepcopy(item)
            )
        )
        if item["type"] == "message":
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self._index(),
                    content_index=0,
                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                )
            )
        return out

    def _close(self) -> list[bytes]:
        item = self.item
        if item is None:
            return []
        self.item = None
        index = self.response["output"].index(item)
        text = "".join(self.pieces)
        self.pieces = []
        out: list[bytes] = []
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            out.append(
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                )
            )
            out.append(
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
            item["content"] = [part]
        elif item["type"] == "reasoning":
            item["content"] = [{"type": "reasoning_text", "text": text}]
        elif item["type"] == "function_call":
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        item["status"] = "completed"
        if item["type"] == "reasoning":
            item.pop("status")
        out.append(
            self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item))
        )
        return out

    def chunk(self, obj: dict[str, Any]) -> list[bytes]:
        out = [] if self.started else self._start()
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                if self.item is None or self.item["type"] != "reasoning":
                    out += self._open({"id": new_id("rs"), "type": "reasoning", "summary": []})
                self.pieces.append(reasoning)
                out.append(
                    self._event(
                        "response.reasoning_text.delta",
                        item_id=self.item["id"] if self.item else "",
                        output_index=self._index(),
                        content_index=0,
                        delta=reasoning,
                    )
                )
            signature = delta.get("thinking_signature")
            if isinstance(signature, str) and self.item and self.item["type"] == "reasoning":
                self.item["encrypted_content"] = self.item.get("encrypted_content", "") + signature
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self.item is None or self.item["type"] != "message":
                    out += self._open(
                        {
                            "id": new_id("msg"),
                            "type": "message",
                            "status": "in_progress",
                            "role": "assistant",
                            "content": [],
                        }
                    )
                self.pieces.append(text)
                out.append(
                    self._event(
                        "response.output_text.delta",
                        item_id=self.item["id"] if self.item else "",
                        output_index=self._index(),
                        content_index=0,
                        delta=text,
                        logprobs=[],
                    )
                )
            for call in delta.get("tool_calls") or []:
                out += self._tool(call)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = int(call.get("index") or 0)
        fn = call.get("function") or {}
        if index not in self.calls:
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.get("id") or new_id("call"),
                "name": fn.get("name") or "",
                "arguments": "",
            }
            out += self._open(item)
            self.calls[index] = self._index()
        item = self.response["output"][self.calls[index]]
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            item["arguments"] += args
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self.calls[index],
                    delta=args,
                )
            )
        return out

    def finish(self) -> list[bytes]:
        if self.finished:
            return []
        self.finished = True
        out = [] if self.started else self._start()
        out += self._close()
        finish(self.response, self.finish_reason, self.usage)
        kind = (
            "response.completed"
            if self.response["status"] == "completed"
            else "response.incomplete"
        )
        out.append(self._event(kind, response=self._snapshot()))
        self.complete = True
        if self.on_done is not None:
            self.on_done(self.response)
        return out

    def fail(self, status: int, error: dict[str, Any]) -> bytes:
        if self.failed:  # an in-band error, then the broken stream's end: say it once
            return b""
        self.failed = self.finished = True
        out = [] if self.started else self._start()
        code = error.get("code") or error.get("type") or "server_error"
        message = str(error.get("message") or "upstream error")
        out.append(self._event("error", code=code, message=message, param=error.get("param")))
        self.response["status"] = "failed"
        self.response["error"] = {"code": "server_error", "message": message}
        out.append(self._event("response.failed", response=self._snapshot()))
        return b"".join(out)


class NativeResponses(Translating):
    """Responses events from a native upstream, passed through unchanged; the
    completed ``Response`` is handed to ``on_done`` (for pinning follow-ups)."""

    def __init__(self, on_done: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        self.on_done = on_done
        self.seq = 0

    def feed(self, data: bytes) -> bytes:
        super().feed(data)  # parses the events for chunk(); the bytes go out as they came
        return data

    def chunk(self, obj: dict[str, Any]) -> list[bytes]:
        if isinstance(obj.get("sequence_number"), int):
            self.seq = obj["sequence_number"] + 1
        if obj.get("type") in ("response.completed", "response.incomplete", "response.failed"):
            self.complete = True
            response = obj.get("response")
            if isinstance(response, dict) and self.on_done is not None:
                self.on_done(response)
        return []

    def finish(self) -> list[bytes]:
        return []

    def fail(self, status: int, error: dict[str, Any]) -> bytes:
        message = str(error.get("message") or "upstream error")
        payload = {
            "type": "error",
            "sequence_number": self.seq,
            "code": error.get("code") or "server_error",
            "message": message,
            "param": error.get("param"),
        }
        return named_event("error", payload)
