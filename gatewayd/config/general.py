"""The ``general_settings`` section (and LiteLLM's ``router_settings`` and
``litellm_settings`` spellings of the same keys)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gatewayd.config.aliases import check_alias_settings, parse_alias_settings
from gatewayd.config.cache import cache_settings, check_cache_store
from gatewayd.config.errors import ConfigError
from gatewayd.config.fleet import alias_hedges, health_check_interval, parse_hedge
from gatewayd.config.keys import KeySection
from gatewayd.config.model import ROUTING_STRATEGIES, GeneralSettings
from gatewayd.config.observability import log_format, otel_settings
from gatewayd.config.request_log import request_log_settings, ui_enabled
from gatewayd.config.values import kind

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
    "workers",
    "otel",
    "log_format",
    "json_logs",
    "access_log",
    "access_log_sample_rate",
    "listen_backlog",
    "state_store",
    "state_store_failure",
    "usage_log",
    "usage_log_max_bytes",
    "usage_log_backups",
    "drop_params",
    "response_store_ttl",
    "response_store_max_bytes",
    "alias_settings",
    "request_log",
    "ui",
    "hedge",
    "health_check_interval",
    "background_health_checks",
    "discover_interval",
    "cache",
    "cache_params",
    "max_audio_upload_bytes",
    "object_id_secret",
}

#: LiteLLM's spellings of the state store, read by :mod:`gatewayd.config.keys`.
READ_ELSEWHERE = frozenset({"redis_url", "redis_host", "redis_port", "redis_password"})

#: Keys gatewayd knows from LiteLLM configs but does not act on, with what is missing.
#: Any of them in any settings section is warned about by name (never with its value).
#: The one table: remove a key from it when gatewayd implements it.
NOT_HONOURED: dict[str, str] = {
    "success_callback": "logging callbacks are not implemented",
    "failure_callback": "logging callbacks are not implemented",
    "callbacks": "logging callbacks are not implemented",
    "service_callback": "logging callbacks are not implemented",
    "modify_params": "parameters are never modified",
    "set_verbose": "use -v/--verbose",
    "database_url": "there is no database",
    "store_model_in_db": "there is no database",
    "alerting": "alerting is not implemented",
    "retry_policy": "use num_retries",
    "allowed_fails_policy": "use allowed_fails",
    "model_group_alias": "aliases are model_list[].model_name",
    "enable_pre_call_checks": "pre-call checks are not implemented",
    "max_budget": "set budgets per key (keys[].budget)",
    "budget_duration": "set budgets per key (keys[].budget)",
}


class GeneralSection(KeySection):
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
                if k in READ_ELSEWHERE:
                    continue
                if k not in GENERAL_KEYS:
                    # Not ours: warned about by name, and an unset os.environ/VAR in it is
                    # no error (LiteLLM configs carry many such keys).
                    reason = NOT_HONOURED.get(k)
                    self.warnings.append(
                        f"{section}.{k}: not honoured by gatewayd ({reason}), ignored"
                        if reason
                        else f"{section}.{k}: unknown key, ignored"
                    )
                    continue
                merged[k] = self.resolve(v, f"{section}.{k}")
                origin[k] = section

        self._origin = origin

        def p(key: str) -> str:
            return origin.get(key, "general_settings")

        g = merged
        master_key = g.get("master_key")
        if "master_key" in g:
            # Present but empty would run an open gateway by mistake: refuse it.
            where = f"{p('master_key')}.master_key"
            if master_key is None:
                raise ConfigError(
                    where, "is empty: set a non-empty string, or remove the key for no auth"
                )
            if not isinstance(master_key, str):
                raise ConfigError(
                    where,
                    f"must be a non-empty string, got {kind(master_key)}: quote the value "
                    "so that it is read as written",
                )
            if not master_key:
                raise ConfigError(where, "must be a non-empty string (it is empty)")
        strategy = self._str(g, "routing_strategy", p("routing_strategy")) or "simple-shuffle"
        if strategy not in ROUTING_STRATEGIES:
            raise ConfigError(
                f"{p('routing_strategy')}.routing_strategy",
                f"unknown strategy {strategy!r}; expected one of {', '.join(ROUTING_STRATEGIES)}",
            )
        timeout_key = "request_timeout" if "request_timeout" in g else "timeout"
        aliases = parse_alias_settings(
            g.get("alias_settings"), f"{p('alias_settings')}.alias_settings", ROUTING_STRATEGIES
        )
        general = GeneralSettings(
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
            workers=self._int(g, "workers", p("workers"), 1, 1),
            otel=otel_settings(self, g.get("otel"), f"{p('otel')}.otel"),
            log_format=log_format(self, g, p("log_format")),
            access_log=self._bool(g, "access_log", p("access_log"), True),
            access_log_sample_rate=self._sample_rate(g, p("access_log_sample_rate")),
            listen_backlog=self._int(g, "listen_backlog", p("listen_backlog"), 1024, 1),
            state_store=self._state_store(g, p, raw),
            state_store_failure=self._state_failure(g, p),
            usage_log=self._str(g, "usage_log", p("usage_log")),
            usage_log_max_bytes=self._int(
                g, "usage_log_max_bytes", p("usage_log_max_bytes"), 100 * 1024 * 1024, 1
            ),
            usage_log_backups=self._int(g, "usage_log_backups", p("usage_log_backups"), 5),
            drop_params=self._bool(g, "drop_params", p("drop_params")),
            response_store_ttl=self._float(
                g, "response_store_ttl", p("response_store_ttl"), 3600.0, positive=True
            ),
            response_store_max_bytes=self._int(
                g, "response_store_max_bytes", p("response_store_max_bytes"), 64 * 1024 * 1024, 0
            ),
            object_id_secret=self._secret(g, "object_id_secret", p("object_id_secret")),
            max_audio_upload_bytes=self._int(
                g, "max_audio_upload_bytes", p("max_audio_upload_bytes"), 25 * 1024 * 1024, 1
            ),
            alias_settings=aliases,
            hedge=parse_hedge(g.get("hedge"), f"{p('hedge')}.hedge"),
            alias_hedges=alias_hedges(aliases, f"{p('alias_settings')}.alias_settings"),
            health_check_interval=health_check_interval(
                g.get("health_check_interval"),
                g.get("background_health_checks"),
                p("health_check_interval"),
            ),
            discover_interval=self._float(
                g, "discover_interval", p("discover_interval"), 60.0, positive=True
            ),
            request_log=request_log_settings(
                self, g.get("request_log"), f"{p('request_log')}.request_log"
            ),
            ui=ui_enabled(self, g, p("ui"), master_key),
            cache=cache_settings(
                self,
                g.get("cache"),
                f"{p('cache')}.cache",
                g.get("cache_params"),
                f"{p('cache_params')}.cache_params",
            ),
        )
        check_cache_store(general.cache, general.state_store, f"{p('cache')}.cache")
        return general

    def _sample_rate(self, g: Mapping[str, Any], section: str) -> float:
        rate = self._float(g, "access_log_sample_rate", section, 1.0)
        if rate > 1.0:
            raise ConfigError(
                f"{section}.access_log_sample_rate",
                f"a fraction of requests, from 0 to 1, got {rate:g}",
            )
        return rate

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
        check_alias_settings(
            g.alias_settings,
            f"{self._origin.get('alias_settings', 'general_settings')}.alias_settings",
            aliases,
        )
        section = self._origin.get("default_fallbacks", "general_settings")
        for t in g.default_fallbacks:
            if t not in aliases:
                raise ConfigError(
                    f"{section}.default_fallbacks",
                    f"fallback {t!r} is not a model_name in model_list",
                )
