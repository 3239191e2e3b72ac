"""Read the YAML file, resolve environment references, validate, build typed objects.

Everything is checked before anything listens; each problem is one line that names
its path (``model_list[2].params.model: ...``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from gatewayd.config.errors import ConfigError
from gatewayd.config.model import (
    ROUTING_STRATEGIES,
    Deployment,
    GatewayConfig,
    GeneralSettings,
)
from gatewayd.providers.catalog import (
    AZURE_AI_DEFAULT_API_VERSION,
    AZURE_DEFAULT_API_VERSION,
    ProviderInfo,
    WireFormat,
    lookup,
)

_ENV_PREFIX = "os.environ/"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_TOP_KEYS = {"model_list", "general_settings", "router_settings", "litellm_settings"}
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
}
_MOCK_KEYS = {"mock_response", "mock_latency_ms", "mock_stream_delay_ms"}
_AZURE_KEYS = {"azure_ad_token"}
_GENERAL_KEYS = {
    "master_key",
    "num_retries",
    "fallbacks",
    "context_window_fallbacks",
    "default_fallbacks",
    "routing_strategy",
    "allowed_fails",
    "cooldown_time",
    "request_timeout",
    "timeout",
    "max_request_body_size",
    "stream_idle_timeout",
    "stream_heartbeat_interval",
    "max_retry_after",
    "graceful_shutdown_timeout",
    "require_auth_for_metrics_endpoint",
    "cors_allow_origins",
}


def load_config(path: str, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the file at ``path``; raise :class:`ConfigError` naming the problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("", f"cannot read config file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"cannot read config file {path}: not UTF-8 ({e.reason})") from None
    return parse_config(text, source=path, environ=environ)


def parse_config(
    text: str, source: str = "<string>", environ: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Validate YAML text into a :class:`GatewayConfig`; raise :class:`ConfigError`."""
    env = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError("", f"{source}: invalid YAML{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("", f"{source}: the top level must be a mapping, not {_kind(raw)}")
    return _Builder(env).build(raw, source)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class _Builder:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.warnings: list[str] = []
        #: The section each general setting was read from, for error paths.
        self._origin: dict[str, str] = {}

    # -- environment references ------------------------------------------------

    def resolve(self, value: Any, path: str) -> Any:
        """Replace ``os.environ/VAR`` and ``${VAR}`` in every string below ``value``."""
        if isinstance(value, str):
            if value.startswith(_ENV_PREFIX):
                var = value[len(_ENV_PREFIX) :]
                if var not in self.env:
                    raise ConfigError(path, f"environment variable {var} is not set")
                return self.env[var]

            def sub(m: re.Match[str]) -> str:
                if m.group(1) not in self.env:
                    raise ConfigError(path, f"environment variable {m.group(1)} is not set")
                return self.env[m.group(1)]

            return _ENV_REF.sub(sub, value)
        if isinstance(value, dict):
            return {k: self.resolve(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    # -- typed getters ---------------------------------------------------------

    def _num(
        self,
        d: Mapping[str, Any],
        key: str,
        path: str,
        *,
        integer: bool,
        minimum: float,
        positive: bool = False,
    ) -> Any:
        v = d[key]
        where = f"{path}.{key}"
        if isinstance(v, str):  # env references arrive as strings
            try:
                v = int(v) if integer else float(v)
            except ValueError:
                raise ConfigError(where, f"expected a number, got {v!r}") from None
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(where, f"expected a number, got {_kind(v)}")
        try:
            float(v)
        except OverflowError:
            raise ConfigError(where, "must be a finite number, got a number too large") from None
        if integer and not float(v).is_integer():
            raise ConfigError(where, f"expected an integer, got {v!r}")
        if not math.isfinite(v) or v < minimum or (positive and v <= 0):
            bound = "greater than 0" if positive else f"at least {minimum:g}"
            raise ConfigError(where, f"must be {bound}, got {v!r}")
        return int(v) if integer else float(v)

    def _int(
        self, d: Mapping[str, Any], key: str, path: str, default: int, minimum: int = 0
    ) -> int:
        if d.get(key) is None:
            return default
        return int(self._num(d, key, path, integer=True, minimum=minimum))

    def _float(
        self, d: Mapping[str, Any], key: str, path: str, default: float, positive: bool = False
    ) -> float:
        if d.get(key) is None:
            return default
        return float(self._num(d, key, path, integer=False, minimum=0, positive=positive))

    def _opt_float(self, d: Mapping[str, Any], key: str, path: str) -> float | None:
        if d.get(key) is None:
            return None
        return float(self._num(d, key, path, integer=False, minimum=0, positive=True))

    def _opt_int(self, d: Mapping[str, Any], key: str, path: str, minimum: int = 1) -> int | None:
        if d.get(key) is None:
            return None
        return int(self._num(d, key, path, integer=True, minimum=minimum))

    def _bool(self, d: Mapping[str, Any], key: str, path: str, default: bool = False) -> bool:
        v = d.get(key)
        if v is None:
            return default
        if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return v.strip().lower() in ("true", "1", "yes")  # an env reference
        if not isinstance(v, bool):
            raise ConfigError(f"{path}.{key}", f"expected true or false, got {_kind(v)}")
        return v

    def _str(self, d: Mapping[str, Any], key: str, path: str) -> str | None:
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ConfigError(f"{path}.{key}", f"expected a string, got {_kind(v)}")
        return str(v)

    def _mapping(self, v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise ConfigError(path, f"expected a mapping, got {_kind(v)}")
        for k in v:
            if not isinstance(k, str):
                raise ConfigError(path, f"keys must be strings, got {k!r}")
        return v

    def _unknown(self, d: Mapping[str, Any], known: set[str], path: str) -> None:
        for k in d:
            if k not in known:
                self.warnings.append(
                    f"{path}.{k}: unknown key, ignored" if path else f"{k}: unknown key, ignored"
                )

    # -- sections --------------------------------------------------------------

    def build(self, raw: dict[str, Any], source: str) -> GatewayConfig:
        raw = self._mapping(raw, "")
        self._unknown(raw, _TOP_KEYS, "")
        general = self._general(raw)
        model_list = raw.get("model_list")
        if model_list is None:
            raise ConfigError("model_list", "is required: a list of model entries")
        if not isinstance(model_list, list):
            raise ConfigError(
                "model_list", f"expected a list of model entries, got {_kind(model_list)}"
            )
        if not model_list:
            raise ConfigError("model_list", "is empty: configure at least one model")
        deployments = [self._deployment(e, i) for i, e in enumerate(model_list)]
        deployments = _unique_ids(deployments)
        aliases = {d.model_name for d in deployments}
        self._check_fallbacks(general, aliases)
        return GatewayConfig(tuple(deployments), general, source, tuple(self.warnings))

    def _general(self, raw: dict[str, Any]) -> GeneralSettings:
        # LiteLLM spreads these keys over three sections; later ones win, general_settings last.
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for section in ("litellm_settings", "router_settings", "general_settings"):
            if raw.get(section) is None:
                continue
            body = self._mapping(raw[section], section)
            for k, v in body.items():
                if k not in _GENERAL_KEYS:
                    # LiteLLM's other settings (general_settings' are warned about below):
                    # not ours, so an unset os.environ/VAR in them is no error either.
                    continue
                merged[k] = self.resolve(v, f"{section}.{k}")
                origin[k] = section
            if section == "general_settings":
                self._unknown(body, _GENERAL_KEYS, section)

        self._origin = origin

        def p(key: str) -> str:
            return origin.get(key, "general_settings")

        g = merged
        master_key = g.get("master_key")
        if master_key is not None:
            if not isinstance(master_key, str) or not master_key:
                raise ConfigError(f"{p('master_key')}.master_key", "must be a non-empty string")
        strategy = self._str(g, "routing_strategy", p("routing_strategy")) or "simple-shuffle"
        if strategy not in ROUTING_STRATEGIES:
            raise ConfigError(
                f"{p('routing_strategy')}.routing_strategy",
                f"unknown strategy {strategy!r}; expected one of {', '.join(ROUTING_STRATEGIES)}",
            )
        timeout_key = "request_timeout" if "request_timeout" in g else "timeout"
        return GeneralSettings(
            master_key=master_key,
            num_retries=self._int(g, "num_retries", p("num_retries"), 0),
            fallbacks=self._fallbacks(g.get("fallbacks"), f"{p('fallbacks')}.fallbacks"),
            context_window_fallbacks=self._fallbacks(
                g.get("context_window_fallbacks"),
                f"{p('context_window_fallbacks')}.context_window_fallbacks",
            ),
            default_fallbacks=self._alias_list(
                g.get("default_fallbacks"), f"{p('default_fallbacks')}.default_fallbacks"
            ),
            routing_strategy=strategy,
            allowed_fails=self._int(g, "allowed_fails", p("allowed_fails"), 3),
            cooldown_time=self._float(g, "cooldown_time", p("cooldown_time"), 30.0),
            request_timeout=self._float(g, timeout_key, p(timeout_key), 600.0, positive=True),
            max_request_body_size=self._int(
                g, "max_request_body_size", p("max_request_body_size"), 64 * 1024 * 1024, 1
            ),
            stream_idle_timeout=self._float(
                g, "stream_idle_timeout", p("stream_idle_timeout"), 60.0, positive=True
            ),
            stream_heartbeat_interval=self._float(
                g, "stream_heartbeat_interval", p("stream_heartbeat_interval"), 0.0
            ),
            max_retry_after=self._float(g, "max_retry_after", p("max_retry_after"), 8.0),
            graceful_shutdown_timeout=self._float(
                g, "graceful_shutdown_timeout", p("graceful_shutdown_timeout"), 30.0
            ),
            require_auth_for_metrics_endpoint=self._bool(
                g, "require_auth_for_metrics_endpoint", p("require_auth_for_metrics_endpoint")
            ),
            cors_allow_origins=self._origins(g.get("cors_allow_origins"), p("cors_allow_origins")),
        )

    def _origins(self, v: Any, section: str) -> tuple[str, ...]:
        path = f"{section}.cors_allow_origins"
        if v is None:
            return ()
        if isinstance(v, str):
            v = [o.strip() for o in v.split(",") if o.strip()]
        if not isinstance(v, list) or not all(isinstance(o, str) and o for o in v):
            raise ConfigError(path, "expected a list of origins like https://app.example.com, or *")
        for o in v:
            if o != "*" and not re.match(r"^https?://[^/\s]+$", o):
                raise ConfigError(path, f"{o!r} is not an origin (scheme://host[:port]) or *")
        return tuple(v)

    def _alias_list(self, v: Any, path: str) -> tuple[str, ...]:
        if v is None:
            return ()
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            raise ConfigError(path, f"expected a list of aliases, got {_kind(v)}")
        for i, a in enumerate(v):
            if not isinstance(a, str) or not a:
                raise ConfigError(f"{path}[{i}]", f"expected an alias name, got {_kind(a)}")
        return tuple(v)

    def _fallbacks(self, v: Any, path: str) -> Mapping[str, tuple[str, ...]]:
        """Accept LiteLLM's ``[{alias: [..]}, ...]`` and a plain ``{alias: [..]}``."""
        if v is None:
            return MappingProxyType({})
        items: list[tuple[str, Any, str]] = []
        if isinstance(v, dict):
            items = [(str(k), val, f"{path}.{k}") for k, val in v.items()]
        elif isinstance(v, list):
            for i, entry in enumerate(v):
                if not isinstance(entry, dict) or not entry:
                    raise ConfigError(
                        f"{path}[{i}]",
                        f"expected a mapping like {{alias: [fallback, ...]}}, got {_kind(entry)}",
                    )
                items += [(str(k), val, f"{path}[{i}].{k}") for k, val in entry.items()]
        else:
            raise ConfigError(
                path, f"expected a list of {{alias: [fallback, ...]}}, got {_kind(v)}"
            )
        out: dict[str, tuple[str, ...]] = {}
        for alias, targets, where in items:
            out[alias] = out.get(alias, ()) + self._alias_list(targets, where)
        return MappingProxyType(out)

    def _check_fallbacks(self, g: GeneralSettings, aliases: set[str]) -> None:
        for name, table in (
            ("fallbacks", g.fallbacks),
            ("context_window_fallbacks", g.context_window_fallbacks),
        ):
            for alias, targets in table.items():
                section = self._origin.get(name, "general_settings")
                if alias not in aliases:
                    raise ConfigError(
                        f"{section}.{name}.{alias}",
                        f"alias {alias!r} is not a model_name in model_list",
                    )
                for t in targets:
                    if t not in aliases:
                        raise ConfigError(
                            f"{section}.{name}.{alias}",
                            f"fallback {t!r} is not a model_name in model_list",
                        )
        section = self._origin.get("default_fallbacks", "general_settings")
        for t in g.default_fallbacks:
            if t not in aliases:
                raise ConfigError(
                    f"{section}.default_fallbacks",
                    f"fallback {t!r} is not a model_name in model_list",
                )

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
            api_base = api_base.rstrip("/")
            if info.prefix == "ollama" and not urlsplit(api_base).path:
                # LiteLLM configs point at Ollama's native root; its OpenAI API is under /v1.
                api_base += "/v1"

        api_key = self._str(params, "api_key", ppath)
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
                for k, v in h.items():
                    if isinstance(v, bool) or not isinstance(v, str | int | float):
                        raise ConfigError(f"{ppath}.{hk}.{k}", f"expected a string, got {_kind(v)}")
                    headers[k] = str(v)

        extra = {k: params[k] for k in extra_keys if k in params}
        if info.wire is WireFormat.MOCK:
            self._check_mock(extra, ppath)

        info_id = None
        if isinstance(entry.get("model_info"), dict):
            raw_id = entry["model_info"].get("id")
            info_id = str(raw_id) if raw_id is not None else None

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
            headers=MappingProxyType(headers),
            extra=MappingProxyType(extra),
            index=index,
        )

    def _opt_weight(self, params: Mapping[str, Any], ppath: str) -> float | None:
        if params.get("weight") is None:
            return None
        return float(self._num(params, "weight", ppath, integer=False, minimum=0, positive=True))

    def _check_mock(self, extra: dict[str, Any], ppath: str) -> None:
        resp = extra.get("mock_response")
        if resp is not None and not isinstance(resp, str):
            raise ConfigError(f"{ppath}.mock_response", f"expected a string, got {_kind(resp)}")
        for k in ("mock_latency_ms", "mock_stream_delay_ms"):
            if extra.get(k) is not None:
                extra[k] = self._num(extra, k, ppath, integer=False, minimum=0)


def _default_id(prefix: str, model: str, api_base: str | None) -> str:
    """``provider/model@host:port``: enough to tell deployments apart, no credentials."""
    if api_base is None:
        return f"{prefix}/{model}"
    host = urlsplit(api_base).netloc.rsplit("@", 1)[-1]
    return f"{prefix}/{model}@{host}"


def _unique_ids(deployments: list[Deployment]) -> list[Deployment]:
    from dataclasses import replace

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
