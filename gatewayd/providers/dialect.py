"""One attempt in the client's dialect: native pass-through, or translated to chat.

Which it is depends on the deployment the router chose, so the decision is made
per attempt: a Messages or Responses request goes as it is to a deployment that
speaks that dialect natively, else through :mod:`gatewayd.dialects` to chat. The
response says which dialect its body is in; the web layer translates it back.
"""

from __future__ import annotations

import json
from dataclasses import replace

from twisted.internet.defer import Deferred, fail, succeed

from gatewayd.config.catalog import WireFormat
from gatewayd.config.model import Deployment
from gatewayd.dialects import Dialect, messages, responses
from gatewayd.dialects.errors import TranslationError
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    FailureKind,
    Provider,
    ProviderRequest,
    UpstreamFailure,
    UpstreamResponse,
    openai_error,
)

_NATIVE_ENDPOINTS = {Dialect.MESSAGES: Endpoint.MESSAGES, Dialect.RESPONSES: Endpoint.RESPONSES}


def native_dialects(dep: Deployment) -> frozenset[Dialect]:
    """The dialects a deployment speaks without translation."""
    wire = dep.provider.wire
    if wire is WireFormat.MOCK:
        return frozenset({Dialect.CHAT})
    if wire is WireFormat.ANTHROPIC:
        return frozenset({Dialect.MESSAGES})
    own = {Dialect.CHAT}
    if dep.provider.prefix in ("openai", "azure"):
        own.add(Dialect.RESPONSES)
    for name in dep.extra.get("api_dialects") or ():
        own.add(Dialect(name))
    return frozenset(own)


def drop_params(dep: Deployment, request: ProviderRequest) -> bool:
    own = dep.extra.get("drop_params")
    return own if isinstance(own, bool) else request.drop_params


def send_in_dialect(
    provider: Provider, request: ProviderRequest, limits: AttemptLimits
) -> Deferred[UpstreamResponse]:
    """Like :meth:`Provider.send`; the response's ``dialect`` says what its body is in."""
    if request.dialect is Dialect.CHAT:
        return provider.send(request, limits)
    dep = provider.deployment
    native = request.dialect in native_dialects(dep)
    if request.endpoint is Endpoint.COUNT_TOKENS:
        if native:
            return _mark(provider.send(request, limits), request.dialect)
        count = {"input_tokens": messages.estimate_tokens(request.body)}
        return succeed(
            UpstreamResponse(200, body=json.dumps(count).encode(), dialect=request.dialect)
        )
    if native:
        call = replace(request, endpoint=_NATIVE_ENDPOINTS[request.dialect])
        return _mark(provider.send(call, limits), request.dialect)
    try:
        if request.dialect is Dialect.MESSAGES:
            body = messages.to_chat(request.body, drop_params(dep, request))
        else:
            body = responses.to_chat(request.body, drop_params(dep, request))
    except TranslationError as e:
        error = openai_error(e.message, "invalid_request_error", "unsupported_parameter", e.param)
        return fail(UpstreamFailure(FailureKind.HTTP, 400, error, deployment=dep.id))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        # A field of a shape the translation cannot take: the client's mistake, not ours.
        error = openai_error(
            f"this request cannot be translated: {type(e).__name__}: {e}",
            "invalid_request_error",
            "invalid_request",
        )
        return fail(UpstreamFailure(FailureKind.HTTP, 400, error, deployment=dep.id))
    chat = ProviderRequest(Endpoint.CHAT, body, request.stream, drop_params=request.drop_params)
    return provider.send(chat, limits)


def _mark(d: Deferred[UpstreamResponse], dialect: Dialect) -> Deferred[UpstreamResponse]:
    def mark(response: UpstreamResponse) -> UpstreamResponse:
        response.dialect = dialect
        return response

    return d.addCallback(mark)
