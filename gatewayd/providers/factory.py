"""Building the provider client for a deployment."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from gatewayd.config.catalog import WireFormat
from gatewayd.config.model import Deployment
from gatewayd.config.tls import TLSSettings
from gatewayd.providers.anthropic import AnthropicProvider
from gatewayd.providers.base import Provider
from gatewayd.providers.mock import MockProvider
from gatewayd.providers.openai import OpenAICompatibleProvider
from gatewayd.upstream.http import UpstreamAgents


def build_provider(deployment: Deployment, agents: UpstreamAgents, clock: IReactorTime) -> Provider:
    """The provider client for one deployment."""
    wire = deployment.provider.wire
    tls = TLSSettings(deployment.ssl_verify, deployment.ssl_certfile, deployment.ssl_keyfile)
    if wire is WireFormat.MOCK:
        return MockProvider(deployment, clock)
    if wire in (
        WireFormat.OPENAI,
        WireFormat.AZURE,
        WireFormat.AZURE_AI,
        WireFormat.COHERE,
        WireFormat.JINA,
    ):
        assert deployment.api_base is not None
        return OpenAICompatibleProvider(
            deployment, agents.agent_for(deployment.api_base, tls), clock
        )
    if wire is WireFormat.ANTHROPIC:
        assert deployment.api_base is not None
        return AnthropicProvider(deployment, agents.agent_for(deployment.api_base, tls), clock)
    raise ValueError(f"provider {deployment.provider.prefix!r} is not implemented")
