"""The ``general_settings`` section (and LiteLLM's ``router_settings`` and
``litellm_settings`` spellings of the same keys)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.model import ROUTING_STRATEGIES, GeneralSettings
from gatewayd.config.values import ValueReader, kind

GENERAL_KEYS = {
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
    "drop_params",
    "response_store_ttl",
    "response_store_max_bytes",
}


class GeneralSection(ValueReader):
    """Builds :class:`GeneralSettings` and checks fallbacks against the aliases."""

    def _general(self, raw: dict[str, Any]) -> GeneralSettings:
        # LiteLLM spreads these keys over three sections; later ones win, general_settings last.
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for section in ("litellm_settings", "router_settings", "general_settings"):
            if raw.get(section) is None:
                continue
            body = self._mapping(raw[section], section)
            for k, v in body.items():
                if k not in GENERAL_KEYS:
                    # LiteLLM's other settings (general_settings' are warned about below):
                    # not ours, so an unset os.environ/VAR in them is no error either.
                    continue
                merged[k] = self.resolve(v, f"{section}.{k}")
                origin[k] = section
            if section == "general_settings":
                self._unknown(body, GENERAL_KEYS, section)

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
            drop_params=self._bool(g, "drop_params", p("drop_params")),
            response_store_ttl=self._float(
                g, "response_store_ttl", p("response_store_ttl"), 3600.0, positive=True
            ),
            response_store_max_bytes=self._int(
                g, "response_store_max_bytes", p("response_store_max_bytes"), 64 * 1024 * 1024, 0
            ),
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
            raise ConfigError(path, f"expected a list of aliases, got {kind(v)}")
        for i, a in enumerate(v):
            if not isinstance(a, str) or not a:
                raise ConfigError(f"{path}[{i}]", f"expected an alias name, got {kind(a)}")
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
                        f"expected a mapping like {{alias: [fallback, ...]}}, got {kind(entry)}",
                    )
                items += [(str(k), val, f"{path}[{i}].{k}") for k, val in entry.items()]
        else:
            raise ConfigError(path, f"expected a list of {{alias: [fallback, ...]}}, got {kind(v)}")
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
