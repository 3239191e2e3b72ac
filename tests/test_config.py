"""The config loader: every error names its path and reason, environment references,
provider defaults (base URLs, key variables), LiteLLM spellings, warnings, secrets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config import ConfigError, GatewayConfig, load_config, parse_config
from gatewayd.config.catalog import (
    AZURE_AI_DEFAULT_API_VERSION,
    AZURE_DEFAULT_API_VERSION,
    WireFormat,
)
from gatewayd.config.model import Deployment, GeneralSettings

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "gateway.example.yaml"

# providers.md, "OpenAI-compatible": prefix → (default base, key variables in order).
OPENAI_COMPATIBLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai": ("https://api.openai.com/v1", ("OPENAI_API_KEY",)),
    "groq": ("https://api.groq.com/openai/v1", ("GROQ_API_KEY",)),
    "mistral": ("https://api.mistral.ai/v1", ("MISTRAL_API_KEY",)),
    "together_ai": (
        "https://api.together.xyz/v1",
        ("TOGETHER_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_API_KEY"),
    ),
    "deepseek": ("https://api.deepseek.com/v1", ("DEEPSEEK_API_KEY",)),
    "fireworks_ai": (
        "https://api.fireworks.ai/inference/v1",
        ("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY"),
    ),
    "openrouter": ("https://openrouter.ai/api/v1", ("OPENROUTER_API_KEY", "OR_API_KEY")),
    "perplexity": ("https://api.perplexity.ai", ("PERPLEXITY_API_KEY", "PERPLEXITYAI_API_KEY")),
    "xai": ("https://api.x.ai/v1", ("XAI_API_KEY",)),
    "nvidia_nim": ("https://integrate.api.nvidia.com/v1", ("NVIDIA_NIM_API_KEY", "NVIDIA_API_KEY")),
    "cerebras": ("https://api.cerebras.ai/v1", ("CEREBRAS_API_KEY",)),
    "sambanova": ("https://api.sambanova.ai/v1", ("SAMBANOVA_API_KEY",)),
    "deepinfra": ("https://api.deepinfra.com/v1/openai", ("DEEPINFRA_API_KEY",)),
    "huggingface": ("https://router.huggingface.co/v1", ("HF_TOKEN", "HUGGINGFACE_API_KEY")),
    "docker_model_runner": (
        "http://localhost:12434/engines/llama.cpp/v1",
        ("DOCKER_MODEL_RUNNER_API_KEY",),
    ),
    "ollama": ("http://localhost:11434/v1", ("OLLAMA_API_KEY",)),
    "vllm": ("http://localhost:8000/v1", ("VLLM_API_KEY",)),
    "lm_studio": ("http://localhost:1234/v1", ("LM_STUDIO_API_KEY",)),
}
LOCAL = ("docker_model_runner", "ollama", "vllm", "lm_studio")
CLOUD = tuple(p for p in OPENAI_COMPATIBLE if p not in LOCAL)


# -- helpers ---------------------------------------------------------------------


def config(
    params: Mapping[str, Any] | None = None,
    general: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    name: str = "a",
    extra_entries: list[Any] | None = None,
    **top: Any,
) -> GatewayConfig:
    """A config of one entry (plus ``extra_entries``), written as YAML (JSON is YAML)."""
    doc: dict[str, Any] = {
        "model_list": [
            {"model_name": name, "params": dict(params or {"model": "openai/gpt-4o"})},
            *(extra_entries or []),
        ]
    }
    if general is not None:
        doc["general_settings"] = dict(general)
    doc.update(top)
    return parse_config(json.dumps(doc), environ=dict(env or {}))


def dep(params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Deployment:
    (d,) = config(params, env=env).deployments
    return d


def entry(name: str, model: str = "openai/gpt-4o", **params: Any) -> dict[str, Any]:
    return {"model_name": name, "params": {"model": model, **params}}


def error(text: str, env: Mapping[str, str] | None = None, source: str = "<string>") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=source, environ=dict(env or {}))
    return info.value


def error_of(doc: Any, env: Mapping[str, str] | None = None) -> ConfigError:
    return error(json.dumps(doc), env)


def assert_names(e: ConfigError, path: str, *reason: str) -> None:
    """The error's one line starts with its path and says why."""
    assert e.path == path
    text = str(e)
    assert "\n" not in text
    assert text.startswith(f"{path}: ") if path else True
    for r in reason:
        assert r in text, f"{r!r} not in {text!r}"


ONE = [entry("a")]


# -- document shape --------------------------------------------------------------


def test_invalid_yaml_names_source_and_line() -> None:
    e = error("model_list:\n  - model_name: a\n    params: [unclosed\n", source="gw.yaml")
    assert_names(e, "", "gw.yaml", "invalid YAML", "line")


def test_tabs_are_invalid_yaml() -> None:
    e = error("model_list:\n\t- model_name: a\n")
    assert_names(e, "", "invalid YAML")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    assert_names(error(text), "", "top level must be a mapping")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "general_settings: {}\n"])
def test_model_list_required(text: str) -> None:
    assert_names(error(text), "model_list", "required")


@pytest.mark.parametrize(
    ("value", "kind"), [({"a": 1}, "a mapping"), ("x", "a string"), (3, "an integer")]
)
def test_model_list_must_be_a_list(value: Any, kind: str) -> None:
    assert_names(error_of({"model_list": value}), "model_list", "expected a list", kind)


def test_model_list_empty() -> None:
    assert_names(error_of({"model_list": []}), "model_list", "empty")


def test_entry_not_a_mapping_names_its_index() -> None:
    e = error_of({"model_list": [entry("a"), entry("b"), "openai/gpt-4o"]})
    assert_names(e, "model_list[2]", "expected a mapping", "a string")


@pytest.mark.parametrize("name", [None, "", "   ", 123, ["a"]])
def test_model_name_required(name: Any) -> None:
    doc: dict[str, Any] = {"params": {"model": "openai/gpt-4o"}}
    if name is not None:
        doc["model_name"] = name
    e = error_of({"model_list": [entry("ok"), doc]})
    assert_names(e, "model_list[1].model_name", "required")


def test_params_required() -> None:
    e = error_of({"model_list": [{"model_name": "a"}]})
    assert_names(e, "model_list[0].params", "required")


def test_params_must_be_a_mapping() -> None:
    e = error_of({"model_list": [{"model_name": "a", "params": "openai/gpt-4o"}]})
    assert_names(e, "model_list[0].params", "expected a mapping", "a string")


def test_params_model_required() -> None:
    e = error_of({"model_list": [entry("a"), {"model_name": "b", "params": {"api_key": "k"}}]})
    assert_names(e, "model_list[1].params.model", "required")


@pytest.mark.parametrize("model", ["gpt-4o", "openai/", "/gpt-4o", ""])
def test_params_model_needs_provider_slash_model(model: str) -> None:
    e = error_of({"model_list": [entry("a"), entry("b"), entry("c", model)]})
    assert e.path == "model_list[2].params.model"
    if model:
        assert_names(e, "model_list[2].params.model", repr(model), "provider/model")


def test_error_path_uses_litellm_params_spelling() -> None:
    e = error_of({"model_list": [{"model_name": "a", "litellm_params": {"model": "gpt-4o"}}]})
    assert_names(e, "model_list[0].litellm_params.model", "provider/model")


def test_config_error_carries_path_and_reason() -> None:
    e = error_of({"model_list": [{"model_name": "a", "params": {"model": "x"}}]})
    assert e.path == "model_list[0].params.model"
    assert e.reason and e.reason in str(e)
    assert str(e) == f"{e.path}: {e.reason}"


# -- providers -------------------------------------------------------------------


def test_unknown_provider_without_api_base_is_refused() -> None:
    e = error_of({"model_list": [entry("a", "acme/big-model")]})
    assert_names(e, "model_list[0].params.model", "unknown provider 'acme'", "api_base")


def test_unknown_provider_with_api_base_is_openai_compatible() -> None:
    d = dep({"model": "acme/big-model", "api_base": "https://llm.acme.test/v1/"})
    assert d.provider.prefix == "acme"
    assert d.provider.wire is WireFormat.OPENAI
    assert d.model == "big-model"
    assert d.api_base == "https://llm.acme.test/v1"
    assert d.api_key is None


def test_unknown_provider_with_api_key_keeps_it() -> None:
    d = dep({"model": "acme/m", "api_base": "http://h:9/v1", "api_key": "k1"})
    assert d.api_key == "k1"


def test_anthropic_defaults_and_key_variable() -> None:
    d = dep({"model": "anthropic/claude-sonnet-4-5"}, env={"ANTHROPIC_API_KEY": "sk-ant"})
    assert d.provider.wire is WireFormat.ANTHROPIC
    assert d.api_base == "https://api.anthropic.com"
    assert d.api_key == "sk-ant"
    assert d.model == "claude-sonnet-4-5"


def test_azure_without_api_base_is_refused() -> None:
    e = error_of({"model_list": [entry("a"), entry("b", "azure/my-gpt4o", api_key="k")]})
    assert_names(e, "model_list[1].params.api_base", "required", "'azure'", "AZURE_API_BASE")


def test_azure_ai_without_api_base_is_refused() -> None:
    e = error_of({"model_list": [entry("a", "azure_ai/mistral-large", api_key="k")]})
    assert_names(e, "model_list[0].params.api_base", "required", "AZURE_AI_API_BASE")


@pytest.mark.parametrize("var", ["AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT"])
def test_azure_api_base_from_environment(var: str) -> None:
    d = dep({"model": "azure/my-gpt4o"}, env={var: "https://res.openai.azure.com/"})
    assert d.api_base == "https://res.openai.azure.com"
    assert d.provider.wire is WireFormat.AZURE
    assert d.model == "my-gpt4o"


def test_azure_api_base_env_order() -> None:
    env = {"AZURE_API_BASE": "https://one.test", "AZURE_OPENAI_ENDPOINT": "https://two.test"}
    assert dep({"model": "azure/d"}, env=env).api_base == "https://one.test"


def test_azure_ai_api_base_from_environment() -> None:
    d = dep({"model": "azure_ai/m"}, env={"AZURE_AI_API_BASE": "https://x.services.ai.azure.com"})
    assert d.api_base == "https://x.services.ai.azure.com"
    assert d.api_version == AZURE_AI_DEFAULT_API_VERSION


def test_azure_api_version_default_env_and_params() -> None:
    base = {"model": "azure/d", "api_base": "https://r.openai.azure.com"}
    assert dep(base).api_version == AZURE_DEFAULT_API_VERSION
    assert dep(base, env={"AZURE_API_VERSION": "2025-01-01"}).api_version == "2025-01-01"
    with_version = {**base, "api_version": "2024-02-01"}
    assert dep(with_version, env={"AZURE_API_VERSION": "x"}).api_version == "2024-02-01"


@pytest.mark.parametrize("var", ["AZURE_API_KEY", "AZURE_OPENAI_API_KEY"])
def test_azure_key_from_environment(var: str) -> None:
    d = dep({"model": "azure/d", "api_base": "https://r.openai.azure.com"}, env={var: "az"})
    assert d.api_key == "az"


@pytest.mark.parametrize(
    "base", ["ftp://files.test", "localhost:8000/v1", "http://", "https:///v1", "api.openai.com"]
)
def test_api_base_must_be_http_url(base: str) -> None:
    e = error_of({"model_list": [entry("a", api_base=base)]})
    assert_names(e, "model_list[0].params.api_base", "http://", "https://")


def test_api_base_not_a_string() -> None:
    e = error_of({"model_list": [entry("a", api_base=["http://x"])]})
    assert_names(e, "model_list[0].params.api_base", "expected a string", "a list")


def test_base_url_is_an_alias_of_api_base() -> None:
    assert dep({"model": "openai/m", "base_url": "http://h:1/v1/"}).api_base == "http://h:1/v1"


@pytest.mark.parametrize("prefix", sorted(OPENAI_COMPATIBLE))
def test_default_api_base_per_provider(prefix: str) -> None:
    base, _ = OPENAI_COMPATIBLE[prefix]
    d = dep({"model": f"{prefix}/some-model"})
    assert d.provider.prefix == prefix
    assert d.provider.wire is WireFormat.OPENAI
    assert d.api_base == base
    assert d.model == "some-model"


def test_explicit_api_base_replaces_default() -> None:
    d = dep({"model": "ollama/llama3", "api_base": "http://gpu-box:11434/v1"})
    assert d.api_base == "http://gpu-box:11434/v1"


@pytest.mark.parametrize("var", ["OPENAI_BASE_URL", "OPENAI_API_BASE"])
def test_openai_base_url_override(var: str) -> None:
    d = dep({"model": "openai/gpt-4o"}, env={var: "https://proxy.test/v1/"})
    assert d.api_base == "https://proxy.test/v1"


def test_openai_base_env_order_and_explicit_wins() -> None:
    env = {"OPENAI_BASE_URL": "https://first.test/v1", "OPENAI_API_BASE": "https://second.test"}
    assert dep({"model": "openai/m"}, env=env).api_base == "https://first.test/v1"
    explicit = {"model": "openai/m", "api_base": "https://mine.test/v1"}
    assert dep(explicit, env=env).api_base == "https://mine.test/v1"


def test_openai_base_url_does_not_leak_to_other_providers() -> None:
    d = dep({"model": "groq/llama"}, env={"OPENAI_BASE_URL": "https://proxy.test/v1"})
    assert d.api_base == "https://api.groq.com/openai/v1"


def test_openai_base_url_from_env_is_validated() -> None:
    e = error_of({"model_list": ONE}, env={"OPENAI_BASE_URL": "proxy.test"})
    assert_names(e, "model_list[0].params.api_base", "http")


@pytest.mark.parametrize(
    ("model", "prefix", "upstream"),
    [
        ("docker_model_runner/ai/smollm2", "docker_model_runner", "ai/smollm2"),
        ("openrouter/anthropic/claude-3.5-sonnet", "openrouter", "anthropic/claude-3.5-sonnet"),
        ("together_ai/meta-llama/Llama-3-70b", "together_ai", "meta-llama/Llama-3-70b"),
        ("huggingface/org/model:fast", "huggingface", "org/model:fast"),
    ],
)
def test_model_split_at_first_slash(model: str, prefix: str, upstream: str) -> None:
    d = dep({"model": model})
    assert (d.provider.prefix, d.model) == (prefix, upstream)


@pytest.mark.parametrize(
    ("alias", "prefix"),
    [("ollama_chat", "ollama"), ("hosted_vllm", "vllm"), ("together", "together_ai")],
)
def test_other_tools_prefix_spellings(alias: str, prefix: str) -> None:
    assert dep({"model": f"{alias}/m"}).provider.prefix == prefix


# -- keys from the environment ---------------------------------------------------


@pytest.mark.parametrize("prefix", sorted(OPENAI_COMPATIBLE))
def test_key_from_first_well_known_variable(prefix: str) -> None:
    _, keys = OPENAI_COMPATIBLE[prefix]
    env = {var: f"key-{i}" for i, var in enumerate(keys)}
    assert dep({"model": f"{prefix}/m"}, env=env).api_key == "key-0"


@pytest.mark.parametrize(
    "prefix", [p for p in sorted(OPENAI_COMPATIBLE) if len(OPENAI_COMPATIBLE[p][1]) > 1]
)
def test_key_from_later_variable_when_first_unset_or_empty(prefix: str) -> None:
    _, keys = OPENAI_COMPATIBLE[prefix]
    assert dep({"model": f"{prefix}/m"}, env={keys[-1]: "last"}).api_key == "last"
    assert dep({"model": f"{prefix}/m"}, env={keys[0]: "", keys[-1]: "last"}).api_key == "last"


def test_together_key_order() -> None:
    env = {"TOGETHERAI_API_KEY": "second", "TOGETHER_AI_API_KEY": "third"}
    assert dep({"model": "together_ai/m"}, env=env).api_key == "second"
    env["TOGETHER_API_KEY"] = "first"
    assert dep({"model": "together_ai/m"}, env=env).api_key == "first"


def test_huggingface_hf_token() -> None:
    env = {"HF_TOKEN": "hf_abc", "HUGGINGFACE_API_KEY": "other"}
    assert dep({"model": "huggingface/org/m"}, env=env).api_key == "hf_abc"


def test_explicit_api_key_beats_environment() -> None:
    d = dep({"model": "openai/m", "api_key": "inline"}, env={"OPENAI_API_KEY": "from-env"})
    assert d.api_key == "inline"


def test_keys_do_not_cross_providers() -> None:
    assert dep({"model": "groq/m"}, env={"OPENAI_API_KEY": "sk"}).api_key is None


@pytest.mark.parametrize("prefix", CLOUD)
def test_cloud_provider_without_key_warns(prefix: str) -> None:
    c = config({"model": f"{prefix}/m"})
    assert c.deployments[0].api_key is None
    (warning,) = c.warnings
    assert warning.startswith("model_list[0].params.api_key: ")
    assert OPENAI_COMPATIBLE[prefix][1][0] in warning


@pytest.mark.parametrize("prefix", LOCAL)
def test_local_providers_need_no_key(prefix: str) -> None:
    c = config({"model": f"{prefix}/m"})
    assert c.deployments[0].api_key is None
    assert c.deployments[0].provider.local
    assert c.warnings == ()


@pytest.mark.parametrize("prefix", LOCAL)
def test_local_provider_key_variable_used_when_set(prefix: str) -> None:
    var = OPENAI_COMPATIBLE[prefix][1][0]
    assert dep({"model": f"{prefix}/m"}, env={var: "local-key"}).api_key == "local-key"


def test_mock_provider_needs_no_base_and_no_key() -> None:
    c = config({"model": "mock/demo", "mock_response": "hi", "mock_latency_ms": "5"})
    d = c.deployments[0]
    assert d.api_base is None and d.api_key is None
    assert d.provider.wire is WireFormat.MOCK
    assert d.extra["mock_response"] == "hi"
    assert d.extra["mock_latency_ms"] == 5.0
    assert c.warnings == ()


def test_mock_keys_are_unknown_on_other_providers() -> None:
    c = config({"model": "ollama/m", "mock_response": "hi"})
    assert c.warnings == ("model_list[0].params.mock_response: unknown key, ignored",)
    assert "mock_response" not in c.deployments[0].extra


def test_mock_response_must_be_a_string() -> None:
    e = error_of({"model_list": [entry("a", "mock/demo", mock_response=["x"])]})
    assert_names(e, "model_list[0].params.mock_response", "expected a string")


# -- numbers and types -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("timeout", "abc", "expected a number, got 'abc'"),
        ("timeout", -1, "greater than 0"),
        ("timeout", 0, "greater than 0"),
        ("timeout", True, "expected a number, got a boolean"),
        ("timeout", [1], "expected a number, got a list"),
        ("timeout", {"s": 1}, "expected a number, got a mapping"),
        ("timeout", "nan", "greater than 0"),
        ("timeout", "inf", "greater than 0"),
        pytest.param("timeout", int("9" * 400), "finite", id="timeout-huge"),
        ("stream_timeout", "soon", "expected a number"),
        ("stream_timeout", -0.5, "greater than 0"),
        ("weight", 0, "greater than 0"),
        ("weight", False, "boolean"),
        ("rpm", 1.5, "expected an integer"),
        ("rpm", 0, "at least 1"),
        ("max_parallel_requests", "two", "expected a number"),
        ("max_parallel_requests", -3, "at least 1"),
    ],
)
def test_param_number_errors(key: str, value: Any, reason: str) -> None:
    e = error_of({"model_list": [entry("a"), entry("b", **{key: value})]})
    assert_names(e, f"model_list[1].params.{key}", reason)


def test_param_numbers_accepted() -> None:
    d = dep(
        {
            "model": "openai/m",
            "timeout": 30,
            "stream_timeout": "2.5",
            "weight": 3,
            "rpm": "60",
            "max_parallel_requests": 4,
        }
    )
    assert d.timeout == 30.0 and isinstance(d.timeout, float)
    assert d.stream_timeout == 2.5
    assert d.weight == 3.0
    assert d.rpm == 60 and isinstance(d.rpm, int)
    assert d.max_parallel_requests == 4


def test_param_numbers_default_to_none() -> None:
    d = dep({"model": "openai/m"})
    assert (d.timeout, d.stream_timeout, d.weight, d.rpm, d.max_parallel_requests) == (None,) * 5


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("num_retries", 1.5, "expected an integer"),
        ("num_retries", "two", "expected a number"),
        ("num_retries", -1, "at least 0"),
        ("num_retries", True, "boolean"),
        pytest.param("num_retries", int("9" * 400), "finite", id="num_retries-huge"),
        ("allowed_fails", -1, "at least 0"),
        ("allowed_fails", "x", "expected a number"),
        ("cooldown_time", "x", "expected a number"),
        ("cooldown_time", -5, "at least 0"),
        ("request_timeout", 0, "greater than 0"),
        ("request_timeout", "abc", "expected a number"),
        ("timeout", -1, "greater than 0"),
        ("max_request_body_size", 0, "at least 1"),
        ("max_request_body_size", 1.5, "integer"),
        ("stream_idle_timeout", 0, "greater than 0"),
        ("max_retry_after", -1, "at least 0"),
    ],
)
def test_general_number_errors(key: str, value: Any, reason: str) -> None:
    e = error_of({"model_list": ONE, "general_settings": {key: value}})
    assert_names(e, f"general_settings.{key}", reason)


def test_general_settings_must_be_a_mapping() -> None:
    e = error_of({"model_list": ONE, "general_settings": ["num_retries", 2]})
    assert_names(e, "general_settings", "expected a mapping")


@pytest.mark.parametrize("value", ["round-robin", "usage-based-routing", 3])
def test_unknown_routing_strategy(value: Any) -> None:
    e = error_of({"model_list": ONE, "general_settings": {"routing_strategy": value}})
    assert_names(e, "general_settings.routing_strategy", "unknown strategy", "simple-shuffle")


def test_routing_strategy_wrong_type() -> None:
    e = error_of({"model_list": ONE, "general_settings": {"routing_strategy": ["x"]}})
    assert_names(e, "general_settings.routing_strategy", "expected a string")


@pytest.mark.parametrize(
    "strategy", ["simple-shuffle", "least-busy", "latency-based-routing", "prefix-affinity"]
)
def test_known_routing_strategies(strategy: str) -> None:
    assert config(general={"routing_strategy": strategy}).general.routing_strategy == strategy


def test_general_defaults() -> None:
    g = config().general
    assert g.master_key is None
    assert g.num_retries == 0
    assert g.allowed_fails == 3
    assert g.cooldown_time == 30.0
    assert g.request_timeout == 600.0
    assert g.max_request_body_size >= 64 * 1024 * 1024
    assert g.routing_strategy == "simple-shuffle"
    assert dict(g.fallbacks) == {} and dict(g.context_window_fallbacks) == {}
    assert g.default_fallbacks == ()
    assert config(general={}).general == g
    assert GeneralSettings() == g


def test_general_values_read() -> None:
    g = config(
        general={
            "num_retries": 2,
            "allowed_fails": 0,
            "cooldown_time": 1.5,
            "request_timeout": 10,
            "max_request_body_size": 1024,
            "routing_strategy": "least-busy",
        }
    ).general
    assert (g.num_retries, g.allowed_fails, g.cooldown_time) == (2, 0, 1.5)
    assert (g.request_timeout, g.max_request_body_size, g.routing_strategy) == (
        10.0,
        1024,
        "least-busy",
    )


def test_general_timeout_is_request_timeout_and_request_timeout_wins() -> None:
    assert config(general={"timeout": 12}).general.request_timeout == 12.0
    both = config(general={"timeout": 12, "request_timeout": 34}).general
    assert both.request_timeout == 34.0


# -- headers ---------------------------------------------------------------------


def test_headers_and_extra_headers() -> None:
    d = dep(
        {
            "model": "openrouter/m",
            "api_key": "k",
            "headers": {"HTTP-Referer": "https://me.test", "X-Title": "Me"},
            "extra_headers": {"X-Num": 3},
        }
    )
    assert dict(d.headers) == {"HTTP-Referer": "https://me.test", "X-Title": "Me", "X-Num": "3"}


def test_headers_must_be_a_mapping_of_strings() -> None:
    e = error_of({"model_list": [entry("a", headers=["X-A: 1"])]})
    assert_names(e, "model_list[0].params.headers", "expected a mapping")
    e = error_of({"model_list": [entry("a", headers={"X-A": ["1"]})]})
    assert_names(e, "model_list[0].params.headers.X-A", "expected a string")


def test_api_key_wrong_type() -> None:
    e = error_of({"model_list": [entry("a", api_key={"k": "v"})]})
    assert_names(e, "model_list[0].params.api_key", "expected a string")


# -- master key ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", 1234, ["k"]])
def test_master_key_must_be_non_empty_string(value: Any) -> None:
    e = error_of({"model_list": ONE, "general_settings": {"master_key": value}})
    assert_names(e, "general_settings.master_key", "non-empty string")


def test_master_key_inline() -> None:
    assert config(general={"master_key": "sk-gw"}).general.master_key == "sk-gw"


@pytest.mark.parametrize("ref", ["os.environ/GATEWAY_API_KEY", "${GATEWAY_API_KEY}"])
def test_master_key_from_environment(ref: str) -> None:
    c = config(general={"master_key": ref}, env={"GATEWAY_API_KEY": "s3cret"})
    assert c.general.master_key == "s3cret"


@pytest.mark.parametrize("ref", ["os.environ/GATEWAY_API_KEY", "${GATEWAY_API_KEY}"])
def test_unset_master_key_is_an_error_not_a_literal(ref: str) -> None:
    e = error_of({"model_list": ONE, "general_settings": {"master_key": ref}}, env={})
    assert_names(e, "general_settings.master_key", "GATEWAY_API_KEY", "not set")


def test_master_key_from_empty_variable_is_an_error() -> None:
    doc = {"model_list": ONE, "general_settings": {"master_key": "os.environ/K"}}
    assert_names(error_of(doc, env={"K": ""}), "general_settings.master_key", "non-empty")


# -- environment references ------------------------------------------------------


def test_environment_references_everywhere() -> None:
    env = {
        "KEY": "sk-env",
        "HOST": "llm.test",
        "PORT": "8443",
        "T": "45",
        "REFERER": "https://app.test",
        "RETRIES": "3",
        "MK": "master",
        "ALIAS": "fast",
        "FB": "a",
    }
    c = parse_config(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "a",
                        "params": {
                            "model": "openai/gpt-4o",
                            "api_key": "os.environ/KEY",
                            "api_base": "https://${HOST}:${PORT}/v1",
                            "timeout": "${T}",
                            "stream_timeout": "os.environ/T",
                            "headers": {"HTTP-Referer": "${REFERER}", "X-Key": "os.environ/KEY"},
                        },
                    },
                    {"model_name": "${ALIAS}", "params": {"model": "ollama/m"}},
                ],
                "general_settings": {
                    "master_key": "os.environ/MK",
                    "num_retries": "os.environ/RETRIES",
                    "fallbacks": [{"fast": ["os.environ/FB"]}],
                },
            }
        ),
        environ=env,
    )
    a, fast = c.deployments
    assert a.api_key == "sk-env"
    assert a.api_base == "https://llm.test:8443/v1"
    assert a.timeout == 45.0 and a.stream_timeout == 45.0
    assert dict(a.headers) == {"HTTP-Referer": "https://app.test", "X-Key": "sk-env"}
    assert fast.model_name == "fast"
    assert c.general.master_key == "master"
    assert c.general.num_retries == 3
    assert dict(c.general.fallbacks) == {"fast": ("a",)}


def test_reference_inside_a_string_and_several_references() -> None:
    d = dep({"model": "openai/m", "api_key": "${A}-${B}-x"}, env={"A": "1", "B": "2"})
    assert d.api_key == "1-2-x"


def test_os_environ_prefix_only_counts_at_the_start() -> None:
    d = dep({"model": "openai/m", "api_key": "literal os.environ/NOPE"})
    assert d.api_key == "literal os.environ/NOPE"


def test_reference_in_model() -> None:
    d = dep({"model": "os.environ/MODEL"}, env={"MODEL": "groq/llama-3.1-8b-instant"})
    assert (d.provider.prefix, d.model) == ("groq", "llama-3.1-8b-instant")


def test_empty_variable_is_set() -> None:
    assert dep({"model": "openai/m", "api_key": "os.environ/K"}, env={"K": ""}).api_key == ""


@pytest.mark.parametrize(
    ("params", "path", "var"),
    [
        (
            {"api_key": "os.environ/OPENAI_API_KEY"},
            "model_list[1].params.api_key",
            "OPENAI_API_KEY",
        ),
        ({"api_key": "${MY_KEY}"}, "model_list[1].params.api_key", "MY_KEY"),
        ({"api_base": "https://${HOST}/v1"}, "model_list[1].params.api_base", "HOST"),
        ({"timeout": "${T}"}, "model_list[1].params.timeout", "T"),
        ({"headers": {"X-Key": "os.environ/HK"}}, "model_list[1].params.headers.X-Key", "HK"),
        ({"model": "os.environ/M"}, "model_list[1].params.model", "M"),
    ],
)
def test_unset_variable_names_path_and_variable(
    params: dict[str, Any], path: str, var: str
) -> None:
    e = error_of({"model_list": [entry("a"), entry("b", **params)]}, env={"OTHER": "x"})
    assert_names(e, path, var, "not set")


def test_unset_variable_in_literal_key_never_sent_upstream() -> None:
    with pytest.raises(ConfigError):
        dep({"model": "openai/m", "api_key": "os.environ/OPENAI_API_KEY"})


def test_unset_variable_in_model_name() -> None:
    e = error_of({"model_list": [{"model_name": "${ALIAS}", "params": {"model": "openai/m"}}]})
    assert_names(e, "model_list[0].model_name", "ALIAS")


def test_unset_variable_in_litellm_params() -> None:
    doc = {"model_list": [{"model_name": "a", "litellm_params": {"api_key": "os.environ/X"}}]}
    assert_names(error_of(doc), "model_list[0].litellm_params.api_key", "X")


@pytest.mark.parametrize(
    ("general", "path", "var"),
    [
        ({"num_retries": "${N}"}, "general_settings.num_retries", "N"),
        ({"fallbacks": [{"a": ["${FB}"]}]}, "general_settings.fallbacks[0].a[0]", "FB"),
        ({"fallbacks": {"a": "os.environ/FB"}}, "general_settings.fallbacks.a", "FB"),
    ],
)
def test_unset_variable_in_general_settings(general: dict[str, Any], path: str, var: str) -> None:
    assert_names(error_of({"model_list": ONE, "general_settings": general}), path, var)


def test_unset_variable_in_router_settings_names_that_section() -> None:
    doc = {"model_list": ONE, "router_settings": {"num_retries": "os.environ/N"}}
    assert_names(error_of(doc), "router_settings.num_retries", "N", "not set")


def test_unset_variable_in_unknown_keys_is_not_fatal() -> None:
    """LiteLLM configs carry keys we ignore; their variables need not be set."""
    c = parse_config(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "a",
                        "litellm_params": {
                            "model": "ollama/m",
                            "aws_secret_access_key": "os.environ/AWS_SECRET_ACCESS_KEY",
                        },
                    }
                ],
                "general_settings": {"database_url": "os.environ/DATABASE_URL"},
                "litellm_settings": {"success_callback": ["${CALLBACK}"]},
                "router_settings": {"redis_password": "os.environ/REDIS_PASSWORD"},
            }
        ),
        environ={},
    )
    assert "model_list[0].litellm_params.aws_secret_access_key: unknown key, ignored" in (
        c.warnings
    )
    assert any(w.startswith("general_settings.database_url: not honoured") for w in c.warnings)


# -- LiteLLM spellings and unknown keys ------------------------------------------


def test_litellm_params_accepted_as_params() -> None:
    c = parse_config(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "a",
                        "litellm_params": {"model": "groq/llama", "api_key": "gk", "rpm": 10},
                        "model_info": {"description": "x"},
                    }
                ]
            }
        ),
        environ={},
    )
    (d,) = c.deployments
    assert (d.provider.prefix, d.model, d.api_key, d.rpm) == ("groq", "llama", "gk", 10)
    assert c.warnings == ()


def test_params_preferred_over_litellm_params() -> None:
    doc = {
        "model_list": [
            {
                "model_name": "a",
                "params": {"model": "ollama/one"},
                "litellm_params": {"model": "ollama/two"},
            }
        ]
    }
    assert parse_config(json.dumps(doc), environ={}).deployments[0].model == "one"


def test_router_and_litellm_settings_are_read() -> None:
    c = config(
        extra_entries=[entry("b", "ollama/m")],
        router_settings={
            "routing_strategy": "least-busy",
            "num_retries": 4,
            "allowed_fails": 1,
            "cooldown_time": 5,
            "redis_host": "127.0.0.1",
        },
        litellm_settings={
            "fallbacks": [{"a": ["b"]}],
            "context_window_fallbacks": [{"b": ["a"]}],
            "default_fallbacks": ["b"],
            "request_timeout": 99,
            "drop_params": True,
        },
    )
    g = c.general
    assert (g.routing_strategy, g.num_retries, g.allowed_fails, g.cooldown_time) == (
        "least-busy",
        4,
        1,
        5.0,
    )
    assert dict(g.fallbacks) == {"a": ("b",)}
    assert dict(g.context_window_fallbacks) == {"b": ("a",)}
    assert g.default_fallbacks == ("b",)
    assert g.request_timeout == 99.0
    # Read but not honoured: named in a warning (issue 7).
    # redis_host is LiteLLM's spelling of the state store: read, not warned about.
    assert g.state_store is not None and "127.0.0.1" in g.state_store
    assert not any("redis_host" in w for w in c.warnings)
    assert g.drop_params is True  # honoured: the dialects drop what they cannot translate
    assert not any("drop_params" in w for w in c.warnings)


def test_general_settings_win_over_router_settings() -> None:
    c = config(
        general={"num_retries": 1},
        router_settings={"num_retries": 5, "cooldown_time": 7},
        litellm_settings={"num_retries": 9},
    )
    assert c.general.num_retries == 1
    assert c.general.cooldown_time == 7.0


def test_router_settings_error_path_names_router_settings() -> None:
    doc = {"model_list": ONE, "router_settings": {"num_retries": "x"}}
    assert_names(error_of(doc), "router_settings.num_retries", "expected a number")
    doc = {"model_list": ONE, "router_settings": {"fallbacks": [{"a": ["nope"]}]}}
    assert_names(error_of(doc), "router_settings.fallbacks.a", "'nope'")


def test_router_settings_must_be_a_mapping() -> None:
    assert_names(error_of({"model_list": ONE, "router_settings": "x"}), "router_settings")


def test_unknown_keys_are_warnings_not_errors() -> None:
    c = parse_config(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "a",
                        "params": {"model": "ollama/m", "custom_llm_provider": "x"},
                        "tags": ["t"],
                    }
                ],
                "general_settings": {"database_url": "postgres://u@h/db", "num_retries": 1},
                "environment_variables": {"A": "b"},
            }
        ),
        environ={},
    )
    assert set(c.warnings) == {
        "model_list[0].params.custom_llm_provider: unknown key, ignored",
        "model_list[0].tags: unknown key, ignored",
        "general_settings.database_url: not honoured by gatewayd (there is no database), ignored",
        "environment_variables: unknown key, ignored",
    }
    assert c.general.num_retries == 1


def test_known_param_keys_give_no_warning() -> None:
    c = config(
        {
            "model": "ollama/m",
            "api_base": "http://h:1/v1",
            "api_key": "k",
            "api_version": "v",
            "timeout": 1,
            "stream_timeout": 1,
            "weight": 1,
            "rpm": 1,
            "tpm": 1,
            "max_parallel_requests": 1,
            "headers": {},
            "extra_headers": {},
        }
    )
    assert c.warnings == ()


# -- fallbacks -------------------------------------------------------------------


def fallback_config(key: str, value: Any) -> GatewayConfig:
    return config(extra_entries=[entry("b", "ollama/m"), entry("c", "ollama/n")], **{key: value})


@pytest.mark.parametrize(
    "value",
    [
        [{"a": ["b", "c"]}, {"b": ["c"]}],
        {"a": ["b", "c"], "b": ["c"]},
        [{"a": ["b"]}, {"a": "c"}, {"b": "c"}],
    ],
)
def test_fallbacks_both_forms(value: Any) -> None:
    g = fallback_config("general_settings", {"fallbacks": value}).general
    assert dict(g.fallbacks) == {"a": ("b", "c"), "b": ("c",)}


@pytest.mark.parametrize("name", ["fallbacks", "context_window_fallbacks"])
@pytest.mark.parametrize("form", ["list", "mapping"])
def test_fallback_key_must_be_an_alias(name: str, form: str) -> None:
    table: Any = [{"nope": ["a"]}] if form == "list" else {"nope": ["a"]}
    e = error_of({"model_list": ONE, "general_settings": {name: table}})
    assert_names(e, f"general_settings.{name}.nope", "'nope'", "not a model_name")


@pytest.mark.parametrize("name", ["fallbacks", "context_window_fallbacks"])
@pytest.mark.parametrize("form", ["list", "mapping"])
def test_fallback_target_must_be_an_alias(name: str, form: str) -> None:
    table: Any = [{"a": ["b", "ghost"]}] if form == "list" else {"a": ["b", "ghost"]}
    e = error_of({"model_list": [entry("a"), entry("b")], "general_settings": {name: table}})
    assert_names(e, f"general_settings.{name}.a", "'ghost'", "not a model_name")


def test_context_window_fallbacks_read() -> None:
    c = fallback_config("general_settings", {"context_window_fallbacks": [{"a": ["c"]}]})
    assert dict(c.general.context_window_fallbacks) == {"a": ("c",)}
    assert dict(c.general.fallbacks) == {}


def test_default_fallbacks() -> None:
    c = fallback_config("general_settings", {"default_fallbacks": ["b", "c"]})
    assert c.general.default_fallbacks == ("b", "c")
    assert fallback_config(
        "general_settings", {"default_fallbacks": "c"}
    ).general.default_fallbacks == ("c",)


def test_default_fallbacks_must_name_aliases() -> None:
    e = error_of({"model_list": ONE, "general_settings": {"default_fallbacks": ["a", "ghost"]}})
    assert_names(e, "general_settings.default_fallbacks", "'ghost'")
    e = error_of({"model_list": ONE, "general_settings": {"default_fallbacks": ["a", 3]}})
    assert_names(e, "general_settings.default_fallbacks[1]", "alias name")
    e = error_of({"model_list": ONE, "general_settings": {"default_fallbacks": {"a": 1}}})
    assert_names(e, "general_settings.default_fallbacks", "expected a list")


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ("a", "general_settings.fallbacks", "expected a list"),
        (3, "general_settings.fallbacks", "expected a list"),
        (["a"], "general_settings.fallbacks[0]", "expected a mapping"),
        ([{}], "general_settings.fallbacks[0]", "expected a mapping"),
        ([{"a": 5}], "general_settings.fallbacks[0].a", "expected a list of aliases"),
        ([{"a": [None]}], "general_settings.fallbacks[0].a[0]", "alias name"),
        ({"a": {"b": 1}}, "general_settings.fallbacks.a", "expected a list of aliases"),
    ],
)
def test_fallbacks_shape_errors(value: Any, path: str, reason: str) -> None:
    e = error_of({"model_list": ONE, "general_settings": {"fallbacks": value}})
    assert_names(e, path, reason)


# -- deployments: ids, aliases, secrets ------------------------------------------


def test_aliases_group_deployments_in_file_order() -> None:
    c = config(
        {"model": "openai/gpt-4o", "api_key": "k1"},
        extra_entries=[entry("b", "ollama/m"), entry("a", "groq/llama", api_key="k2")],
    )
    assert list(c.aliases) == ["a", "b"]
    assert [d.provider.prefix for d in c.aliases["a"]] == ["openai", "groq"]
    assert [d.index for d in c.deployments] == [0, 1, 2]


def test_deployment_ids_unique_and_free_of_keys() -> None:
    secrets = [f"sk-secret-{i}" for i in range(4)]
    c = parse_config(
        json.dumps(
            {
                "model_list": [
                    *(entry("a", "openai/gpt-4o", api_key=s) for s in secrets),
                    entry("b", "openai/gpt-4o", api_base="https://h.test:8443/v1"),
                    entry("c", "vllm/m", api_base="http://r.test:8000"),
                    entry("d", "mock/demo"),
                    entry("d", "mock/demo"),
                ]
            }
        ),
        environ={},
    )
    ids = [d.id for d in c.deployments]
    assert len(set(ids)) == len(ids)
    for i in ids:
        assert "sk-" not in i and "user" not in i
    assert ids[0] == "openai/gpt-4o@api.openai.com"
    assert ids[1] == "openai/gpt-4o@api.openai.com#2"
    assert ids[4] == "openai/gpt-4o@h.test:8443"
    assert ids[5] == "vllm/m@r.test:8000"
    assert ids[6:] == ["mock/demo", "mock/demo#2"]


@pytest.mark.parametrize(
    "base", ["https://q.test/v1?key=sk-secret-q", "http://r.test:8000/v1#frag"]
)
def test_api_base_with_query_or_fragment_is_refused(base: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            json.dumps({"model_list": [entry("c", "openai/gpt-4o", api_base=base)]}), environ={}
        )
    assert "model_list[0].params.api_base" in str(info.value)
    assert "sk-secret" not in str(info.value)


def test_suffixed_ids_never_collide_with_given_ids() -> None:
    c = parse_config(
        json.dumps(
            {
                "model_list": [
                    entry("a", "ollama/m"),
                    entry("a", "ollama/m"),
                    {
                        "model_name": "a",
                        "params": {"model": "ollama/n"},
                        "model_info": {"id": "ollama/m@localhost:11434#2"},
                    },
                ]
            }
        ),
        environ={},
    )
    ids = [d.id for d in c.deployments]
    assert len(set(ids)) == 3
    assert ids[2] == "ollama/m@localhost:11434#2"


def test_model_info_id_is_used() -> None:
    doc = {"model_list": [{**entry("a", "ollama/m"), "model_info": {"id": 42}}]}
    assert parse_config(json.dumps(doc), environ={}).deployments[0].id == "42"


def test_ids_are_stable_across_loads() -> None:
    doc = json.dumps({"model_list": [entry("a", "ollama/m"), entry("b", "groq/x")]})
    first = [d.id for d in parse_config(doc, environ={}).deployments]
    assert first == [d.id for d in parse_config(doc, environ={"GROQ_API_KEY": "k"}).deployments]


def test_repr_never_shows_secrets() -> None:
    c = config(
        {
            "model": "openai/gpt-4o",
            "api_key": "os.environ/OPENAI_API_KEY",
            "headers": {"X-Upstream-Token": "hdr-secret-1"},
        },
        {"master_key": "${GATEWAY_API_KEY}"},
        env={"OPENAI_API_KEY": "sk-live-abc123", "GATEWAY_API_KEY": "gw-master-789"},
        extra_entries=[entry("b", "groq/llama")],
    )
    assert c.deployments[0].api_key == "sk-live-abc123"
    assert c.general.master_key == "gw-master-789"
    for text in (repr(c), str(c), repr(c.deployments), repr(c.general), str(c.warnings)):
        assert "sk-live-abc123" not in text
        assert "gw-master-789" not in text
        assert "hdr-secret-1" not in text


def test_repr_never_shows_env_keys() -> None:
    c = config({"model": "groq/m"}, env={"GROQ_API_KEY": "gsk-from-env-42"})
    assert c.deployments[0].api_key == "gsk-from-env-42"
    assert "gsk-from-env-42" not in repr(c)


def test_errors_never_show_secrets() -> None:
    doc = {"model_list": [entry("a", api_key="sk-shown-?", api_base="not a url sk-shown-?")]}
    assert "sk-shown-?" not in str(error_of(doc))


def test_config_is_immutable() -> None:
    c = config(general={"fallbacks": [{"a": ["a"]}]})
    with pytest.raises(AttributeError):
        c.general.num_retries = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        c.general.fallbacks["x"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        c.deployments[0].headers["x"] = "y"  # type: ignore[index]


# -- files -----------------------------------------------------------------------


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(str(path), environ={})
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path), environ={})


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"model_list:\n  - model_name: caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(path), environ={})


def test_load_config_reads_file_and_records_source(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: smollm2\n"
        "    params:\n"
        "      model: docker_model_runner/ai/smollm2\n"
        "      api_key: os.environ/DMR_KEY\n",
        encoding="utf-8",
    )
    c = load_config(str(path), environ={"DMR_KEY": "k"})
    assert c.source == str(path)
    assert c.deployments[0].api_key == "k"


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model_list: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_config(str(path), environ={})


def test_shipped_example_config() -> None:
    c = load_config(str(EXAMPLE), environ={})
    demo = c.aliases["demo"]
    assert [d.provider.prefix for d in demo] == ["mock"]
    assert demo[0].provider.wire is WireFormat.MOCK
    assert isinstance(demo[0].extra.get("mock_response"), str)
    others = [a for a in c.aliases if a != "demo"]
    assert others
    for alias in others:
        assert c.general.fallbacks[alias] == ("demo",)
    assert c.general.master_key is None
    smollm2 = c.aliases["smollm2"][0]
    assert (smollm2.provider.prefix, smollm2.model) == ("docker_model_runner", "ai/smollm2")
    assert c.warnings == ()


def test_ollama_root_api_base_gets_its_openai_path() -> None:
    d = dep({"model": "ollama/llama3", "api_base": "http://gpu:11434"})
    assert d.api_base == "http://gpu:11434/v1"
    d = dep({"model": "ollama/llama3", "api_base": "http://gpu:11434/v1/"})
    assert d.api_base == "http://gpu:11434/v1"


def test_params_and_litellm_params_together_warn() -> None:
    c = parse_config(
        "model_list:\n  - model_name: a\n    params: {model: mock/x}\n"
        "    litellm_params: {model: openai/y}\n",
        environ={},
    )
    assert c.deployments[0].provider.prefix == "mock"
    assert any("litellm_params" in w for w in c.warnings)


def test_cors_allow_origins() -> None:
    base = "model_list: [{model_name: a, params: {model: mock/x}}]\n"
    assert parse_config(base, environ={}).general.cors_allow_origins == ()
    c = parse_config(base + "general_settings: {cors_allow_origins: ['*']}", environ={})
    assert c.general.cors_allow_origins == ("*",)
    c = parse_config(
        base + "general_settings: {cors_allow_origins: 'https://a.test, http://b.test:8080'}",
        environ={},
    )
    assert c.general.cors_allow_origins == ("https://a.test", "http://b.test:8080")
    with pytest.raises(ConfigError) as info:
        parse_config(
            base + "general_settings: {cors_allow_origins: [https://a.test/path]}", environ={}
        )
    assert "general_settings.cors_allow_origins" in str(info.value)
