"""How one request's answer is worded in the client's dialect.

An :class:`Answer` renders the JSON body, the stream stage and the errors of one
exchange; :class:`ChatAnswer` is the identity (OpenAI shapes throughout).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gatewayd.dialects import Dialect, messages, responses
from gatewayd.dialects.errors import anthropic_error
from gatewayd.dialects.messages_stream import MessagesStream
from gatewayd.dialects.responses_stream import NativeResponses, ResponsesStream
from gatewayd.dialects.stages import NativeMessages, Stage, named_event
from gatewayd.providers.base import UpstreamResponse
from gatewayd.upstream.sse import data_event
from gatewayd.web.errors import error_json


class Answer:
    """Chat Completions: what the upstream (or its translation to chat) sent."""

    dialect = Dialect.CHAT

    def error(self, status: int, error: dict[str, Any]) -> bytes:
        """The JSON error body."""
        return error_json(error)

    def stream_error(self, status: int, error: dict[str, Any]) -> bytes:
        """The error as an event, once SSE headers went out."""
        return data_event({"error": error})

    def body(self, response: UpstreamResponse, deployment: str) -> bytes:
        return response.body or b""

    def stage(self, response: UpstreamResponse, deployment: str) -> Stage:
        return Stage()


ChatAnswer = Answer


class MessagesAnswer(Answer):
    """Anthropic Messages: native bodies as they are, chat ones translated."""

    dialect = Dialect.MESSAGES

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def error(self, status: int, error: dict[str, Any]) -> bytes:
        return json.dumps(anthropic_error(status, error)).encode()

    def stream_error(self, status: int, error: dict[str, Any]) -> bytes:
        return named_event("error", anthropic_error(status, error))

    def body(self, response: UpstreamResponse, deployment: str) -> bytes:
        if response.dialect is Dialect.MESSAGES:
            return response.body or b""
        chat = json.loads(response.body or b"{}")
        return json.dumps(messages.from_chat(chat, self.alias)).encode()

    def stage(self, response: UpstreamResponse, deployment: str) -> Stage:
        if response.dialect is Dialect.MESSAGES:
            return NativeMessages()
        return MessagesStream(self.alias)


class ResponsesAnswer(Answer):
    """OpenAI Responses: native bodies as they are, chat ones translated; each finished
    response handed to ``keep`` (with the deployment when its id is the upstream's)."""

    dialect = Dialect.RESPONSES

    def __init__(
        self,
        alias: str,
        echo: dict[str, Any],
        keep: Callable[[dict[str, Any], str | None], None],
    ) -> None:
        self.alias = alias
        self.echo = echo  # the request as the client sent it: echoed in the Response
        self.keep = keep
        self.response_id = responses.new_id("resp")

    def stream_error(self, status: int, error: dict[str, Any]) -> bytes:
        return ResponsesStream(self.echo, self.response_id, self.alias).fail(status, error)

    def body(self, response: UpstreamResponse, deployment: str) -> bytes:
        if response.dialect is Dialect.RESPONSES:
            native = json.loads(response.body or b"{}")
            if isinstance(native, dict) and native.get("id"):
                self.keep(native, deployment)
            return response.body or b""
        chat = json.loads(response.body or b"{}")
        out = responses.from_chat(chat, self.echo, self.response_id, self.alias)
        self.keep(out, None)
        return json.dumps(out).encode()

    def stage(self, response: UpstreamResponse, deployment: str) -> Stage:
        if response.dialect is Dialect.RESPONSES:
            return NativeResponses(lambda r: self.keep(r, deployment))
        return ResponsesStream(
            self.echo, self.response_id, self.alias, lambda r: self.keep(r, None)
        )
