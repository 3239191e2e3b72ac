"""POST /v1/messages and /v1/messages/count_tokens: the Anthropic Messages dialect.

Routed like chat completions; the answer (and every error, ours included) is
Anthropic's. Auth: the master key as ``x-api-key`` (what the anthropic SDK sends),
Bearer or ``api-key``; ``anthropic-version`` and ``anthropic-beta`` are accepted and
passed on to a native upstream.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET, Request

from gatewayd.dialects import Dialect
from gatewayd.providers.base import Endpoint
from gatewayd.web.answers import Answer, MessagesAnswer
from gatewayd.web.exchange import Exchange, Gateway, upstream_call
from gatewayd.web.request import GatewayRequest
from gatewayd.web.resource_kinds import NotFound, RoutedResource

#: The Anthropic shape for errors before the alias is known (auth, body).
_ANTHROPIC = MessagesAnswer("")


def forwarded(request: Request) -> tuple[tuple[str, str], ...]:
    out = []
    for name in (b"anthropic-version", b"anthropic-beta"):
        for value in request.requestHeaders.getRawHeaders(name) or []:
            out.append((name.decode(), value.decode("latin-1")))
    return tuple(out)


class MessagesResource(RoutedResource):
    """POST /v1/messages; its child ``count_tokens``."""

    isLeaf = False
    answer: Answer = _ANTHROPIC
    dialect = Dialect.MESSAGES

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway)
        self.count = CountTokensResource(gateway)

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"count_tokens":
            return self.count
        if path == b"":
            return self
        return NotFound()

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        parsed = self.parse(request, "messages")
        if isinstance(parsed, bytes):
            return parsed
        body, stream = parsed
        # What Anthropic itself requires, checked here so every upstream answers alike.
        tokens = body.get("max_tokens")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            return self.error(request, 400, "max_tokens: Field required (a positive integer)")
        if not isinstance(body.get("messages"), list):
            return self.error(request, 400, "messages: Field required (a list)")
        return _exchange(self, request, Endpoint.MESSAGES, body, stream)


class CountTokensResource(RoutedResource):
    """POST /v1/messages/count_tokens: the upstream's count when it is Anthropic, else
    an estimate."""

    answer: Answer = _ANTHROPIC
    dialect = Dialect.MESSAGES

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        parsed = self.parse(request, "messages/count_tokens")
        if isinstance(parsed, bytes):
            return parsed
        body, _ = parsed
        return _exchange(self, request, Endpoint.COUNT_TOKENS, body, False)


def _exchange(
    resource: RoutedResource,
    request: GatewayRequest,
    endpoint: Endpoint,
    body: dict[str, Any],
    stream: bool,
) -> int:
    """Route a Messages-dialect request; the answer is worded in Anthropic's shapes."""
    assert request.alias is not None
    call = upstream_call(
        request,
        endpoint,
        body,
        stream,
        dialect=Dialect.MESSAGES,
        drop_params=resource.drop_params(),
        forward_headers=forwarded(request),
    )
    Exchange(resource.gateway, request, request.alias, call, MessagesAnswer(request.alias))
    return NOT_DONE_YET
