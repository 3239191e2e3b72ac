"""The client dialects the gateway speaks, with Chat Completions as the hub.

Each dialect module is pure: request dicts in, request dicts out; response dicts in,
response dicts out; stream events in, stream events out. Nothing here touches the
network or the reactor.

* :mod:`~gatewayd.dialects.anthropic_chat`: chat <-> Anthropic Messages, the egress half
  (used by the ``anthropic/`` provider) and its inverse's building blocks.
* :mod:`~gatewayd.dialects.messages` / :mod:`~gatewayd.dialects.messages_stream`: the
  Messages ingress (Anthropic clients in front of any upstream).
* :mod:`~gatewayd.dialects.responses` / :mod:`~gatewayd.dialects.responses_stream`: the
  OpenAI Responses ingress.
* :mod:`~gatewayd.dialects.store`: what ``previous_response_id`` needs, with a TTL.
"""

from __future__ import annotations

from enum import Enum


class Dialect(Enum):
    """A client dialect; the value is the ``dialect`` metrics label."""

    CHAT = "chat"
    RESPONSES = "responses"
    MESSAGES = "messages"


__all__ = ["Dialect"]
