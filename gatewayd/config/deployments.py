"""One ``model_list`` entry: provider, URL, key, limits and headers of a deployment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from gatewayd.config.catalog import (
    AZURE_AI_DEFAULT_API_VERSION,
    AZURE_DEFAULT_API_VERSION,
    ProviderInfo,
    WireFormat,
    lookup,
)
from gatewayd.config.endpoints import UNIT_PRICES, api_endpoints, unit_prices
from gatewayd.config.errors import ConfigError
from gatewayd.config.fleet import parse_health_check
from gatewayd.config.model import Deployment
from gatewayd.config.tls import TLSSettings, tls_creator
from gatewayd.config.values import ValueReader, kind

_ENTRY_KEYS = {"model_name", "params", "litellm_params", "model_info"}
_PARAM_KEYS = {
    "model",
    "api_base",
    "base_url",
    "api_key",
    "api_version",
    "timeout",
    "stream_timeout",
    "weight",
    "rpm",
    "tpm",
    "max_parallel_requests",
    "headers",
    "extra_headers",
    "ssl_verify",
    "ssl_certfile",
    "ssl_keyfile",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "api_dialects",
    "drop_params",
    "health_check",
    "discover",
    "discover_interval",
    "api_endpoints",
    *UNIT_PRICES,
}
_MOCK_KEYS = {"mock_response", "mock_latency_ms", "mock_stream_delay_ms"}
_AZURE_KEYS = {"azure_ad_token"}
#: Header names whose values are credentials: strings only, never a YAML number.
_SECRET_HEADER = re.compile(r"auth|key|token|secret|password|cookie", re.IGNORECASE)


class DeploymentSection(ValueReader):
    """Builds one :class:`Deployment` per ``model_list`` entry."""

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env)
        #: TLS settings already loaded in this file. Loading them (an OpenSSL context,
        #: twice) took 1.3 ms: 1,000 deployments with the same settings spent most of a
        #: load on it. The files themselves are still opened for each deployment.
        self.tls_loaded: set[TLSSettings] = set()

    def _deployment(self, entry: Any, index: int) -> Deployment:
        path = f"model_list[{index}]"
        entry = self._mapping(entry, path)
        self._unknown(entry, _ENTRY_KEYS, path)
        name = self.resolve(entry.get("model_name"), f"{path}.model_name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{path}.model_name", "is required: the alias clients send as model")
        if "params" in entry:
            params_key = "params"
            if "litellm_params" in entry:
                self.warnings.append(f"{path}: both params and litellm_params given; using params")
        elif "litellm_params" in entry:
            params_key = "litellm_params"
        else:
            raise ConfigError(f"{path}.params", "is required (with at least params.model)")
        ppath = f"{path}.{params_key}"
        params = self._mapping(entry[params_key], ppath)
        # Only keys we read are resolved: an unset variable in an ignored (unknown) key
        # is not an error, as unknown keys are warned about, never fatal.
        read = _PARAM_KEYS | _MOCK_KEYS | _AZURE_KEYS
        params = {k: self.resolve(v, f"{ppath}.{k}") if k in read else v for k, v in params.items()}

        model = params.get("model")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"{ppath}.model", "is required: provider/upstream-model")
        prefix, sep, upstream = model.partition("/")
        if not sep or not prefix or not upstream:
            raise ConfigError(
                f"{ppath}.model",
                f"{model!r} is not of the form provider/model (e.g. openai/gpt-4o)",
            )
        info = lookup(prefix)
        api_base = self._str(params, "api_base", ppath) or self._str(params, "base_url", ppath)
        if info is None:
            if not api_base:
                raise ConfigError(
                    f"{ppath}.model",
                    f"unknown provider {prefix!r} and no api_base given "
                    "(set api_base to use any OpenAI-compatible server)",
                )
            base_info = lookup("openai")
            assert base_info is not None
            info = ProviderInfo(prefix, WireFormat.OPENAI, None, local=True)
        if not info.supported:
            raise ConfigError(
                f"{ppath}.model",
                f"provider {info.prefix!r} is not supported by this release of gatewayd yet",
            )
        extra_keys = {WireFormat.MOCK: _MOCK_KEYS, WireFormat.AZURE: _AZURE_KEYS}.get(
            info.wire, set()
        )
        self._unknown(params, _PARAM_KEYS | extra_keys, ppath)

        if info.wire is WireFormat.MOCK:
            api_base = None
        else:
            if not api_base:
                api_base = next((self.env[v] for v in info.base_env if self.env.get(v)), None)
            api_base = api_base or info.default_base
            if not api_base:
                raise ConfigError(
                    f"{ppath}.api_base",
                    f"is required for provider {info.prefix!r}"
                    + (f" (or set {' or '.join(info.base_env)})" if info.base_env else ""),
                )
            if not re.match(r"^https?://[^/\s]+", api_base):
                raise ConfigError(
                    f"{ppath}.api_base", "must be an http:// or https:// URL with a host"
                )
            if "?" in api_base or "#" in api_base:
                raise ConfigError(
                    f"{ppath}.api_base",
                    "must not carry a query or fragment (paths are appended to it)",
                )
            if "@" in urlsplit(api_base).netloc:  # the value is not shown: it holds a secret
                raise ConfigError(
                    f"{ppath}.api_base",
                    "must not contain credentials (user:password@): use api_key or headers",
                )
            api_base = api_base.rstrip("/")
            if info.prefix == "ollama" and not urlsplit(api_base).path:
                # LiteLLM configs point at Ollama's native root; its OpenAI API is under /v1.
                api_base += "/v1"

        api_key = self._secret(params, "api_key", ppath)
        self._secret(params, "azure_ad_token", ppath)
        if info.wire is WireFormat.AZURE and params.get("azure_ad_token") is None:
            # An Entra ID token (sent as a Bearer token) when no api-key is given.
            if api_key is None and not any(self.env.get(v) for v in info.key_env):
                if self.env.get("AZURE_AD_TOKEN"):
                    params["azure_ad_token"] = self.env["AZURE_AD_TOKEN"]
        if api_key is None:
            api_key = next((self.env[v] for v in info.key_env if self.env.get(v)), None)
            if (
                api_key is None
                and not info.local
                and info.wire is not WireFormat.MOCK
                and params.get("azure_ad_token") is None
            ):
                self.warnings.append(
                    f"{ppath}.api_key: not set and none of {', '.join(info.key_env)} is set; "
                    "requests will be sent without a key"
                )

        api_version = self._str(params, "api_version", ppath)
        if info.wire is WireFormat.AZURE and api_version is None:
            api_version = self.env.get("AZURE_API_VERSION") or AZURE_DEFAULT_API_VERSION
        if info.wire is WireFormat.AZURE_AI and api_version is None:
            api_version = AZURE_AI_DEFAULT_API_VERSION

        headers: dict[str, str] = {}
        for hk in ("headers", "extra_headers"):
            if params.get(hk) is not None:
                h = self._mapping(params[hk], f"{ppath}.{hk}")
                for k in h:
                    if _SECRET_HEADER.search(k):
                        self._secret(h, k, f"{ppath}.{hk}")
                    value = self._str(h, k, f"{ppath}.{hk}")
                    if value is None:
                        raise ConfigError(f"{ppath}.{hk}.{k}", "expected a string, got null")
                    headers[k] = value

        extra = {k: params[k] for k in extra_keys if k in params}
        extra.update(_dialect_params(params, ppath))
        if info.wire is WireFormat.MOCK:
            self._check_mock(extra, ppath)

        info_id = None
        if isinstance(entry.get("model_info"), dict):
            info_id = self._str(entry["model_info"], "id", f"{path}.model_info")

        prices = _prices(self, params, entry.get("model_info"), ppath)
        return Deployment(
            model_name=name,
            id=info_id or _default_id(info.prefix, upstream, api_base),
            provider=info,
            model=upstream,
            api_base=api_base,
            api_key=api_key,
            api_version=api_version,
            timeout=self._opt_float(params, "timeout", ppath),
            stream_timeout=self._opt_float(params, "stream_timeout", ppath),
            weight=self._opt_weight(params, ppath),
            rpm=self._opt_int(params, "rpm", ppath),
            max_parallel_requests=self._opt_int(params, "max_parallel_requests", ppath),
            tpm=self._opt_int(params, "tpm", ppath),
            input_cost_per_token=prices.get("input_cost_per_token", 0.0),
            output_cost_per_token=prices.get("output_cost_per_token", 0.0),
            cache_read_input_token_cost=prices.get("cache_read_input_token_cost"),
            cache_creation_input_token_cost=prices.get("cache_creation_input_token_cost"),
            headers=MappingProxyType(headers),
            extra=MappingProxyType(extra),
            index=index,
            health_check=parse_health_check(params.get("health_check"), f"{ppath}.health_check"),
            discover=self._discover(params, ppath, name, upstream),
            discover_interval=self._opt_float(params, "discover_interval", ppath),
            api_endpoints=api_endpoints(params, entry.get("model_info"), info.wire, ppath, path),
            unit_prices=unit_prices(self, params, entry.get("model_info"), ppath, path),
            **_tls(self, params, ppath, self.tls_loaded),
        )

    def _discover(self, params: Mapping[str, Any], ppath: str, alias: str, model: str) -> bool:
        """``params.discover``: only for a wildcard alias whose model has a ``*``."""
        v = params.get("discover", False)
        if not isinstance(v, bool):
            raise ConfigError(f"{ppath}.discover", f"expected true or false, got {kind(v)}")
        if v and ("*" not in alias or "*" not in model):
            raise ConfigError(
                f"{ppath}.discover",
                'is for a wildcard alias (model_name: "ollama/*", model: "ollama/*")',
            )
        return v

    def _opt_weight(self, params: Mapping[str, Any], ppath: str) -> float | None:
        if params.get("weight") is None:
            return None
        return float(self._num(params, "weight", ppath, integer=False, minimum=0, positive=True))

    def _check_mock(self, extra: dict[str, Any], ppath: str) -> None:
        resp = extra.get("mock_response")
        if resp is not None and not isinstance(resp, str):
            raise ConfigError(f"{ppath}.mock_response", f"expected a string, got {kind(resp)}")
        for k in ("mock_latency_ms", "mock_stream_delay_ms"):
            if extra.get(k) is not None:
                extra[k] = self._num(extra, k, ppath, integer=False, minimum=0)


def _tls(
    reader: ValueReader, params: Mapping[str, Any], ppath: str, loaded: set[TLSSettings]
) -> dict[str, Any]:
    """``ssl_verify`` (true, false or a CA bundle path), ``ssl_certfile``/``ssl_keyfile``:
    each file readable and the whole set loadable now, not at the first request (once per
    distinct set: ``loaded`` holds those that loaded)."""
    raw = params.get("ssl_verify")
    verify: bool | str = True
    if isinstance(raw, bool):
        verify = raw
    elif raw is not None:
        text = reader._str(params, "ssl_verify", ppath) or ""
        low = text.strip().lower()
        verify = (
            low in ("true", "1", "yes") if low in ("true", "false", "1", "0", "yes", "no") else text
        )
    certfile = reader._str(params, "ssl_certfile", ppath)
    keyfile = reader._str(params, "ssl_keyfile", ppath)
    if keyfile is not None and certfile is None:
        raise ConfigError(f"{ppath}.ssl_keyfile", "needs ssl_certfile (the client certificate)")
    for key, value in (
        ("ssl_verify", verify),
        ("ssl_certfile", certfile),
        ("ssl_keyfile", keyfile),
    ):
        if isinstance(value, str):
            try:
                with open(value, "rb"):
                    pass
            except OSError as e:
                raise ConfigError(f"{ppath}.{key}", f"cannot read {value}: {e.strerror}") from None
    # The trust settings alone first, then with the client certificate: the error
    # names the key whose file would not load.
    for key, settings in (
        ("ssl_verify", TLSSettings(verify)),
        ("ssl_certfile", TLSSettings(verify, certfile, keyfile)),
    ):
        if settings in loaded:
            continue
        try:
            tls_creator(settings, b"localhost")
        except Exception as e:  # OpenSSL's errors for a bad PEM, a key that does not match
            raise ConfigError(f"{ppath}.{key}", f"cannot load the TLS files: {e}") from None
        loaded.add(settings)
    return {"ssl_verify": verify, "ssl_certfile": certfile, "ssl_keyfile": keyfile}


_PRICE_KEYS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
)


def _prices(r: ValueReader, params: Mapping[str, Any], info: Any, ppath: str) -> dict[str, float]:
    """USD per token from ``params``, else ``model_info`` (LiteLLM puts them in either).
    The cache prices are left out when unset: cached tokens then cost the input price."""
    out = {}
    for k in _PRICE_KEYS:
        if params.get(k) is not None:
            out[k] = r._float(params, k, ppath, 0.0)
        elif isinstance(info, dict) and info.get(k) is not None:
            out[k] = r._float(
                r.resolve(info, "model_info"), k, ppath.rsplit(".", 1)[0] + ".model_info", 0.0
            )
    return out


def _dialect_params(params: Mapping[str, Any], ppath: str) -> dict[str, Any]:
    """``api_dialects`` (what the upstream speaks natively) and ``drop_params``."""
    out: dict[str, Any] = {}
    dialects = params.get("api_dialects")
    if dialects is not None:
        known = ("chat", "responses", "messages")
        if isinstance(dialects, str):
            dialects = [dialects]
        if not isinstance(dialects, list) or any(d not in known for d in dialects):
            raise ConfigError(
                f"{ppath}.api_dialects", f"expected a list of {', '.join(known)}, got {dialects!r}"
            )
        out["api_dialects"] = tuple(dialects)
    drop = params.get("drop_params")
    if drop is not None:
        if not isinstance(drop, bool):
            raise ConfigError(f"{ppath}.drop_params", f"expected true or false, got {kind(drop)}")
        out["drop_params"] = drop
    return out


def _default_id(prefix: str, model: str, api_base: str | None) -> str:
    """``provider/model@host:port``: enough to tell deployments apart, no credentials."""
    if api_base is None:
        return f"{prefix}/{model}"
    host = urlsplit(api_base).netloc.rsplit("@", 1)[-1]
    return f"{prefix}/{model}@{host}"


def unique_ids(deployments: list[Deployment]) -> list[Deployment]:
    taken = {d.id for d in deployments}  # a suffixed id must not take a later one's id
    used: set[str] = set()
    out = []
    for d in deployments:
        if d.id in used:
            n = 2
            while f"{d.id}#{n}" in taken or f"{d.id}#{n}" in used:
                n += 1
            d = replace(d, id=f"{d.id}#{n}")
        used.add(d.id)
        out.append(d)
    return out
