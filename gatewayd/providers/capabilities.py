"""Which :class:`Endpoint` a deployment serves, by the names of ``params.api_endpoints``."""

from __future__ import annotations

from collections.abc import Mapping

from gatewayd.config.model import Deployment
from gatewayd.providers.base import Endpoint

#: Each routed endpoint under its ``api_endpoints`` name.
ENDPOINT_NAMES: Mapping[Endpoint, str] = {
    Endpoint.CHAT: "chat",
    Endpoint.COMPLETIONS: "completions",
    Endpoint.EMBEDDINGS: "embeddings",
    Endpoint.RESPONSES: "responses",
    Endpoint.MESSAGES: "messages",
    Endpoint.COUNT_TOKENS: "messages",
    Endpoint.SPEECH: "speech",
    Endpoint.TRANSCRIPTIONS: "transcriptions",
    Endpoint.TRANSLATIONS: "translations",
    Endpoint.IMAGES: "images",
    Endpoint.IMAGE_EDITS: "images",
    Endpoint.IMAGE_VARIATIONS: "images",
    Endpoint.MODERATIONS: "moderations",
    Endpoint.RERANK: "rerank",
    Endpoint.FILES: "files",
    Endpoint.BATCHES: "batches",
}

#: The endpoints every deployment serves unless ``api_endpoints`` says otherwise.
_TEXT = frozenset({"chat", "completions", "embeddings", "responses", "messages"})


def endpoint_name(endpoint: Endpoint) -> str:
    """``endpoint`` as ``api_endpoints`` names it (``speech``, ``images``...)."""
    return ENDPOINT_NAMES[endpoint]


def serves(deployment: Deployment, endpoint: Endpoint) -> bool:
    """Whether ``deployment`` may be sent a request for ``endpoint``."""
    names = deployment.api_endpoints if deployment.api_endpoints is not None else _TEXT
    return ENDPOINT_NAMES[endpoint] in names
