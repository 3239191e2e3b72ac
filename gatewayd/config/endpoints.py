"""Which API endpoints a deployment serves: ``params.api_endpoints`` or LiteLLM's
``model_info.mode``, else its provider's defaults.

The names are the ones users write (``chat``, ``speech``, ``rerank``...); the web layer
maps each path to one of them. Resolved once at load: a :class:`Deployment` carries
the set it serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gatewayd.config.catalog import WireFormat
from gatewayd.config.errors import ConfigError
from gatewayd.config.values import ValueReader, kind

#: Every endpoint name ``params.api_endpoints`` may list.
API_ENDPOINTS: tuple[str, ...] = (
    "chat",
    "completions",
    "embeddings",
    "responses",
    "messages",
    "speech",
    "transcriptions",
    "translations",
    "images",
    "moderations",
    "rerank",
    "files",
    "batches",
)

#: The endpoints every deployment served before ``api_endpoints`` existed: a provider
#: that cannot do one of them answers its own 400 (as before), so they stay the default.
_TEXT = frozenset({"chat", "completions", "embeddings", "responses", "messages"})

#: LiteLLM's ``model_info.mode`` values and what each means here.
MODES: Mapping[str, frozenset[str]] = {
    "chat": frozenset({"chat", "completions", "responses", "messages"}),
    "completion": frozenset({"completions"}),
    "embedding": frozenset({"embeddings"}),
    "responses": frozenset({"responses", "chat", "messages"}),
    "audio_speech": frozenset({"speech"}),
    "audio_transcription": frozenset({"transcriptions", "translations"}),
    "image_generation": frozenset({"images"}),
    "image_edit": frozenset({"images"}),
    "moderation": frozenset({"moderations"}),
    "rerank": frozenset({"rerank"}),
    "batch": frozenset({"files", "batches"}),
}

#: What a deployment serves by default, by wire format: OpenAI-format servers (OpenAI,
#: Azure, every compatible prefix, the mock) all of it; Anthropic only the text
#: endpoints; the rerank providers only rerank.
_DEFAULTS: Mapping[WireFormat, frozenset[str]] = {
    WireFormat.OPENAI: frozenset(API_ENDPOINTS),
    WireFormat.AZURE: frozenset(API_ENDPOINTS),
    WireFormat.AZURE_AI: _TEXT,
    WireFormat.MOCK: frozenset(API_ENDPOINTS),
    WireFormat.ANTHROPIC: _TEXT,
    WireFormat.COHERE: frozenset({"rerank"}),
    WireFormat.JINA: frozenset({"rerank"}),
}


def default_endpoints(wire: WireFormat) -> frozenset[str]:
    """The endpoints a deployment of this wire format serves unless told otherwise."""
    return _DEFAULTS.get(wire, _TEXT)


def api_endpoints(
    params: Mapping[str, Any], model_info: Any, wire: WireFormat, ppath: str, path: str
) -> frozenset[str]:
    """The endpoints one ``model_list`` entry serves: ``params.api_endpoints`` (a list of
    :data:`API_ENDPOINTS` names, or one name), else ``model_info.mode``, else the
    defaults of its wire format. Raises :class:`ConfigError` naming the key."""
    raw = params.get("api_endpoints")
    if raw is not None:
        where = f"{ppath}.api_endpoints"
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not names:
            raise ConfigError(
                where, f"expected a list of {', '.join(API_ENDPOINTS)}, got {kind(raw)}"
            )
        for i, name in enumerate(names):
            if name not in API_ENDPOINTS:
                raise ConfigError(
                    f"{where}[{i}]",
                    f"unknown endpoint {name!r}; expected one of {', '.join(API_ENDPOINTS)}",
                )
        return frozenset(names)
    if isinstance(model_info, dict) and model_info.get("mode") is not None:
        mode = model_info["mode"]
        if not isinstance(mode, str) or mode not in MODES:
            raise ConfigError(
                f"{path}.model_info.mode",
                f"unknown mode {mode!r}; expected one of {', '.join(MODES)}",
            )
        return MODES[mode]
    return default_endpoints(wire)


#: Prices per unit other than a token (LiteLLM's names), in USD.
UNIT_PRICES = (
    "input_cost_per_request",
    "input_cost_per_query",
    "input_cost_per_second",
    "output_cost_per_second",
    "input_cost_per_character",
    "output_cost_per_image",
)


def unit_prices(
    reader: ValueReader, params: Mapping[str, Any], model_info: Any, ppath: str, path: str
) -> Mapping[str, float]:
    """The :data:`UNIT_PRICES` set in ``params``, else in ``model_info`` (LiteLLM puts
    prices in either); each a number of at least 0."""
    out: dict[str, float] = {}
    for k in UNIT_PRICES:
        if params.get(k) is not None:
            out[k] = reader._float(params, k, ppath, 0.0)
        elif isinstance(model_info, dict) and model_info.get(k) is not None:
            info = {k: reader.resolve(model_info[k], f"{path}.model_info.{k}")}
            out[k] = reader._float(info, k, f"{path}.model_info", 0.0)
    return MappingProxyType(out)
