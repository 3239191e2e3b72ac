"""OpenAI-compatible upstreams: pass-through with ``model`` replaced.

Covers every OpenAI-compatible prefix (one client, a table of defaults in
:mod:`gatewayd.config.catalog`) and Azure's two URL layouts, which differ
only in the URL and the auth header.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from gatewayd.config.catalog import WireFormat
from gatewayd.config.model import Deployment
from gatewayd.providers.base import Endpoint, ProviderRequest
from gatewayd.providers.http_provider import HTTPProvider
from gatewayd.providers.request_headers import bearer_headers, copy_headers


def upstream_body(request: ProviderRequest, model: str) -> bytes:
    """The client's body with ``model`` replaced: every other field kept as sent, in order."""
    body = dict(request.body)
    body["model"] = model
    return dump_json(body)


#: One encoder for every body: ``json.dumps`` with arguments builds one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dump_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON; ASCII escapes only when the text holds a lone surrogate
    (legal in JSON text, not encodable as UTF-8).

    Raises ValueError for NaN or Infinity (a client's ``1e999`` parses as one):
    Python would write them as bare words that no JSON parser accepts."""
    try:
        text = _ENCODER.encode(obj)
    except ValueError as e:
        if isinstance(e, UnicodeError):
            raise
        raise ValueError(
            "the request holds a number JSON cannot carry (NaN, Infinity, or one too large "
            "for a double such as 1e999)"
        ) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")


class OpenAICompatibleProvider(HTTPProvider):
    """Any server that speaks OpenAI's wire format, Azure OpenAI and Azure AI included."""

    def __init__(self, deployment: Deployment, agent: IAgent, clock: IReactorTime) -> None:
        super().__init__(deployment, agent, clock)
        # A deployment's URLs and headers never change: built once, not per request.
        self._urls: dict[Endpoint, bytes] = {}
        self._headers = self.headers_for()

    def build_request(self, request: ProviderRequest) -> tuple[bytes, Headers, bytes]:
        known = None if request.path is not None else self._urls.get(request.endpoint)
        if known is not None:
            url = known
        else:
            url = self.url_for(request).encode("ascii")
            if request.path is None:  # an object's own path (files/{id}) is not kept
                self._urls[request.endpoint] = url
        headers = copy_headers(self._headers)
        # Files and batches name no model upstream (OpenAI refuses unknown fields).
        model = None if request.endpoint in _OBJECTS else self.deployment.model
        if request.upload is not None:  # multipart: the client's parts, model replaced
            headers.setRawHeaders(b"content-type", [request.upload.content_type()])
            return url, headers, request.upload.body(model)
        if request.method != "POST":
            headers.removeHeader(b"content-type")
            return url, headers, b""
        if model is None:
            return url, headers, dump_json({k: v for k, v in request.body.items() if k != "model"})
        return url, headers, upstream_body(request, model)

    def url_for(self, request: ProviderRequest) -> str:
        """The upstream URL for this request's endpoint."""
        dep = self.deployment
        base = dep.api_base or ""
        path = request.path or request.endpoint.value
        wire = dep.provider.wire
        if wire is WireFormat.COHERE:  # Cohere's v2 API; Jina's rerank sits at the base
            return f"{base}/v2/{path}"
        if wire is WireFormat.AZURE:
            if base.endswith("/openai/v1"):  # the v1 surface: model in the body, no version
                return f"{base}/{path}"
            if request.endpoint in _NOT_PER_DEPLOYMENT:  # not per deployment: model in the body
                sep = "&" if "?" in path else "?"
                return (
                    f"{base}/openai/{path}{sep}api-version={quote(dep.api_version or '', safe='')}"
                )
            return (
                f"{base}/openai/deployments/{quote(dep.model, safe='')}/{path}"
                f"?api-version={quote(dep.api_version or '', safe='')}"
            )
        if wire is WireFormat.AZURE_AI and _is_foundry_host(base):
            return f"{base}/models/{path}?api-version={quote(dep.api_version or '', safe='')}"
        return f"{base}/{path}"

    def headers_for(self) -> Headers:
        dep = self.deployment
        extra = list(dep.headers.items())
        if dep.provider.wire is WireFormat.AZURE or (
            dep.provider.wire is WireFormat.AZURE_AI and _is_foundry_host(dep.api_base or "")
        ):
            token = dep.extra.get("azure_ad_token")
            h = bearer_headers(None if dep.api_key else token, extra)
            if dep.api_key:
                h.setRawHeaders(b"api-key", [dep.api_key.encode()])
            return h
        return bearer_headers(dep.api_key, extra)


#: Endpoints that name no upstream model.
_OBJECTS = frozenset({Endpoint.FILES, Endpoint.BATCHES})
#: Azure's paths that are not under /openai/deployments/{name}.
_NOT_PER_DEPLOYMENT = frozenset({Endpoint.RESPONSES, Endpoint.FILES, Endpoint.BATCHES})


def _is_foundry_host(base: str) -> bool:
    host = urlsplit(base).hostname or ""
    return host.endswith(".services.ai.azure.com")
