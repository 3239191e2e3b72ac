"""One GET to a deployment's upstream (a health probe, a model listing), with its
credentials, on the deployment's connection pool, bounded by a timeout."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from gatewayd.config.catalog import WireFormat
from gatewayd.config.model import Deployment
from gatewayd.config.tls import TLSSettings
from gatewayd.upstream.http import BodyCollector

#: A listing bigger than this is cut (a model list is a few kilobytes).
MAX_BODY = 4 * 1024 * 1024

#: Makes the agent for a URL with TLS settings (``UpstreamAgents.agent_for``).
AgentFor = Callable[[str, TLSSettings], IAgent]


def listing_url(d: Deployment) -> str:
    """Where ``d``'s upstream lists its models: Ollama's ``/api/tags`` at its root, else
    ``{api_base}/models`` (OpenAI-compatible servers, vLLM, llama.cpp, Docker Model
    Runner's ``/engines/v1``)."""
    assert d.api_base is not None
    if d.provider.prefix == "ollama":
        parts = urlsplit(d.api_base)
        return f"{parts.scheme}://{parts.netloc}/api/tags"
    return f"{d.api_base}/models"


def auth_headers(d: Deployment) -> Headers:
    """The deployment's credentials and extra headers, as its provider sends them."""
    h = Headers({b"accept": [b"application/json"]})
    if d.api_key:
        if d.provider.wire is WireFormat.ANTHROPIC:
            h.setRawHeaders(b"x-api-key", [d.api_key.encode()])
            h.setRawHeaders(b"anthropic-version", [b"2023-06-01"])
        elif d.provider.wire is WireFormat.AZURE:
            h.setRawHeaders(b"api-key", [d.api_key.encode()])
        else:
            h.setRawHeaders(b"authorization", [b"Bearer " + d.api_key.encode()])
    for k, v in d.headers.items():
        h.setRawHeaders(k.encode(), [v.encode()])
    return h


def get(
    agent_for: AgentFor, clock: IReactorTime, d: Deployment, url: str, timeout: float
) -> Deferred[tuple[int, bytes]]:
    """GET ``url`` with ``d``'s credentials. Fires with (status, body); fails on a
    connection error, or with a ``TimeoutError`` after ``timeout`` seconds (the
    connection is then closed)."""
    tls = TLSSettings(d.ssl_verify, d.ssl_certfile, d.ssl_keyfile)
    agent = agent_for(url, tls)
    sent: Deferred[IResponse] = agent.request(b"GET", url.encode("ascii"), auth_headers(d))

    def read(response: IResponse) -> Deferred[tuple[int, bytes]]:
        collector = BodyCollector(MAX_BODY, None)
        response.deliverBody(collector)
        return collector.done.addCallback(lambda body: (response.code, body))

    result: Deferred[tuple[int, bytes]] = sent.addCallback(read)
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        result.cancel()

    timer = clock.callLater(timeout, expire)

    def settle(outcome: object) -> object:
        if timer.active():
            timer.cancel()
        if expired and isinstance(outcome, Failure):
            raise TimeoutError(f"no answer within {timeout:g} s")
        return outcome

    return result.addBoth(settle)
