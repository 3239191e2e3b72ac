"""What we know of each upstream provider: default base URL, key variables, wire format.

Pure data with no imports from the rest of the package, so the config loader can
validate prefixes and resolve keys without pulling in any network code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class WireFormat(Enum):
    """How a provider's requests and responses are shaped."""

    OPENAI = "openai"  # OpenAI's own paths and bodies: pass-through
    AZURE = "azure"  # OpenAI bodies, Azure's deployment URLs and api-key header
    AZURE_AI = "azure_ai"  # Azure AI Foundry model inference
    ANTHROPIC = "anthropic"  # the Messages API: translated both ways
    MOCK = "mock"  # answered in-process, no network
    COHERE = "cohere"  # Cohere's rerank (POST {base}/v2/rerank)
    JINA = "jina"  # Jina's rerank (POST {base}/rerank), Cohere's body


@dataclass(frozen=True)
class ProviderInfo:
    """Defaults for one provider prefix."""

    prefix: str
    wire: WireFormat
    default_base: str | None
    key_env: tuple[str, ...] = ()
    base_env: tuple[str, ...] = ()
    #: Local servers need no key: with none configured, no auth header is sent.
    local: bool = False
    #: Implemented in this release; others are refused at load with a clear reason.
    supported: bool = True


def _openai(prefix: str, base: str, *keys: str, local: bool = False) -> ProviderInfo:
    return ProviderInfo(prefix, WireFormat.OPENAI, base, tuple(keys), local=local)


PROVIDERS: dict[str, ProviderInfo] = {
    p.prefix: p
    for p in (
        ProviderInfo(
            "openai",
            WireFormat.OPENAI,
            "https://api.openai.com/v1",
            ("OPENAI_API_KEY",),
            ("OPENAI_BASE_URL", "OPENAI_API_BASE"),
        ),
        _openai("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        _openai("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        _openai(
            "together_ai",
            "https://api.together.xyz/v1",
            "TOGETHER_API_KEY",
            "TOGETHERAI_API_KEY",
            "TOGETHER_AI_API_KEY",
        ),
        _openai("deepseek", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        _openai(
            "fireworks_ai",
            "https://api.fireworks.ai/inference/v1",
            "FIREWORKS_AI_API_KEY",
            "FIREWORKS_API_KEY",
        ),
        _openai("openrouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", "OR_API_KEY"),
        _openai(
            "perplexity", "https://api.perplexity.ai", "PERPLEXITY_API_KEY", "PERPLEXITYAI_API_KEY"
        ),
        _openai("xai", "https://api.x.ai/v1", "XAI_API_KEY"),
        _openai(
            "nvidia_nim",
            "https://integrate.api.nvidia.com/v1",
            "NVIDIA_NIM_API_KEY",
            "NVIDIA_API_KEY",
        ),
        _openai("cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
        _openai("sambanova", "https://api.sambanova.ai/v1", "SAMBANOVA_API_KEY"),
        _openai("deepinfra", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
        _openai(
            "huggingface", "https://router.huggingface.co/v1", "HF_TOKEN", "HUGGINGFACE_API_KEY"
        ),
        _openai(
            "docker_model_runner",
            "http://localhost:12434/engines/llama.cpp/v1",
            "DOCKER_MODEL_RUNNER_API_KEY",
            local=True,
        ),
        _openai("ollama", "http://localhost:11434/v1", "OLLAMA_API_KEY", local=True),
        _openai("vllm", "http://localhost:8000/v1", "VLLM_API_KEY", local=True),
        _openai("lm_studio", "http://localhost:1234/v1", "LM_STUDIO_API_KEY", local=True),
        ProviderInfo(
            "azure",
            WireFormat.AZURE,
            None,
            ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY"),
            ("AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT"),
        ),
        ProviderInfo(
            "azure_ai",
            WireFormat.AZURE_AI,
            None,
            ("AZURE_AI_API_KEY",),
            ("AZURE_AI_API_BASE",),
        ),
        ProviderInfo(
            "anthropic",
            WireFormat.ANTHROPIC,
            "https://api.anthropic.com",
            ("ANTHROPIC_API_KEY",),
            ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"),
        ),
        ProviderInfo(
            "cohere", WireFormat.COHERE, "https://api.cohere.com", ("COHERE_API_KEY", "CO_API_KEY")
        ),
        ProviderInfo(
            "jina_ai",
            WireFormat.JINA,
            "https://api.jina.ai/v1",
            ("JINA_AI_API_KEY", "JINA_API_KEY"),
        ),
        ProviderInfo("mock", WireFormat.MOCK, None, local=True),
    )
}

#: Spellings other tools use for the same provider.
ALIASES: dict[str, str] = {
    "docker": "docker_model_runner",
    "dmr": "docker_model_runner",
    "together": "together_ai",
    "fireworks": "fireworks_ai",
    "nvidia": "nvidia_nim",
    "hf": "huggingface",
    "lmstudio": "lm_studio",
    "hosted_vllm": "vllm",
    "openai_compatible": "openai",
    "ollama_chat": "ollama",
    "jina": "jina_ai",
}

#: Azure's api-version when neither params nor AZURE_API_VERSION give one.
AZURE_DEFAULT_API_VERSION = "2024-10-21"
AZURE_AI_DEFAULT_API_VERSION = "2024-05-01-preview"


def lookup(prefix: str) -> ProviderInfo | None:
    """The provider for a model prefix (accepting other tools' spellings), or None."""
    return PROVIDERS.get(ALIASES.get(prefix, prefix))
