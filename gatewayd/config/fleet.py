"""Settings for fleets of model servers: hedged requests (``general_settings.hedge``
and ``alias_settings.ALIAS.hedge``) and active health checks
(``general_settings.health_check_interval``, ``params.health_check``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from gatewayd.config.aliases import AliasSettings
from gatewayd.config.errors import ConfigError
from gatewayd.config.values import kind

HEDGE_KEYS = ("after_ms", "after_quantile", "max_extra", "budget_percent", "enabled")


@dataclass(frozen=True)
class HedgeSettings:
    """When to send the same request to another deployment (docs/routing.md#hedging).

    Exactly one of ``after_ms`` (a fixed delay) and ``after_quantile`` (the alias's
    observed quantile of time to first byte) is set."""

    after_ms: float | None = None
    after_quantile: float | None = None
    #: Extra copies at most, each one delay after the previous.
    max_extra: int = 1
    #: Hedges stay under this share of the alias's requests in any rolling minute.
    budget_percent: float = 10.0

    def describe(self) -> str:
        when = (
            f"after {self.after_ms:g} ms"
            if self.after_ms is not None
            else f"after the p{self.after_quantile * 100:g} of time to first byte"
            if self.after_quantile is not None
            else "never"
        )
        return f"{when}, max_extra {self.max_extra}, budget {self.budget_percent:g} %"


def _number(v: Any, path: str, low: float, high: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(path, f"expected a number, got {kind(v)}")
    if v < low or (high is not None and v > high):
        bound = f"from {low:g} to {high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(path, f"must be {bound}, got {v:g}")
    return float(v)


def parse_hedge(v: Any, path: str) -> HedgeSettings | None:
    """``v``: a raw ``hedge`` mapping (or None: no hedging); errors name ``path``'s keys.
    ``enabled: false`` turns hedging off (for one alias under a general ``hedge``)."""
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise ConfigError(path, f"expected a mapping like {{after_ms: 500}}, got {kind(v)}")
    for k in v:
        if k not in HEDGE_KEYS:
            raise ConfigError(
                f"{path}.{k}", f"unknown key; expected one of {', '.join(HEDGE_KEYS)}"
            )
    enabled = v.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"{path}.enabled", f"expected true or false, got {kind(enabled)}")
    if not enabled:
        return None
    after_ms = v.get("after_ms")
    quantile = v.get("after_quantile")
    if (after_ms is None) == (quantile is None):
        raise ConfigError(path, "set exactly one of after_ms and after_quantile")
    max_extra = v.get("max_extra", 1)
    if isinstance(max_extra, bool) or not isinstance(max_extra, int) or not 1 <= max_extra <= 4:
        raise ConfigError(f"{path}.max_extra", f"must be an integer from 1 to 4, got {max_extra!r}")
    return HedgeSettings(
        after_ms=None if after_ms is None else _number(after_ms, f"{path}.after_ms", 0),
        after_quantile=(
            None if quantile is None else _number(quantile, f"{path}.after_quantile", 0.5, 0.999)
        ),
        max_extra=max_extra,
        budget_percent=_number(v.get("budget_percent", 10), f"{path}.budget_percent", 0, 100),
    )


def alias_hedges(
    aliases: Mapping[str, AliasSettings], path: str
) -> Mapping[str, HedgeSettings | None]:
    """Each alias with a ``hedge`` of its own: its parsed settings (None: off)."""
    return MappingProxyType(
        {
            alias: parse_hedge(s.hedge, f"{path}.{alias}.hedge")
            for alias, s in aliases.items()
            if s.hedge is not None
        }
    )


#: LiteLLM's default ``health_check_interval`` when ``background_health_checks`` is on.
LITELLM_HEALTH_CHECK_INTERVAL = 300.0
#: Seconds a probe may take unless ``params.health_check.timeout`` says otherwise.
DEFAULT_PROBE_TIMEOUT = 5.0
HEALTH_CHECK_KEYS = ("path", "interval", "timeout", "completion")


@dataclass(frozen=True)
class HealthCheck:
    """``params.health_check``: how one deployment is probed (docs/routing.md)."""

    #: A path under ``api_base`` (``/models``, ``/health``); None: the provider's model
    #: listing (``/models``, or Ollama's ``/api/tags``).
    path: str | None = None
    #: Seconds between probes; None: ``general_settings.health_check_interval``.
    interval: float | None = None
    timeout: float = DEFAULT_PROBE_TIMEOUT
    #: Probe with a one-token chat completion instead of a GET (costs a token).
    completion: bool = False


def parse_health_check(v: Any, path: str) -> HealthCheck | None:
    """``true``, ``false`` or ``{path, interval, timeout}``; errors name ``path``'s keys."""
    if v is None or v is False:
        return None
    if v is True:
        return HealthCheck()
    if not isinstance(v, Mapping):
        raise ConfigError(
            path, f"expected true, false or a mapping like {{path: /health}}, got {kind(v)}"
        )
    for k in v:
        if k not in HEALTH_CHECK_KEYS:
            raise ConfigError(
                f"{path}.{k}", f"unknown key; expected one of {', '.join(HEALTH_CHECK_KEYS)}"
            )
    probe_path = v.get("path")
    if probe_path is not None and (
        not isinstance(probe_path, str) or not probe_path.startswith("/")
    ):
        raise ConfigError(f"{path}.path", f"expected a path starting with /, got {probe_path!r}")
    interval = v.get("interval")
    completion = v.get("completion", False)
    if not isinstance(completion, bool):
        raise ConfigError(f"{path}.completion", f"expected true or false, got {kind(completion)}")
    if completion and probe_path is not None:
        raise ConfigError(path, "set path or completion, not both")
    return HealthCheck(
        completion=completion,
        path=probe_path,
        interval=None if interval is None else _number(interval, f"{path}.interval", 0.1),
        timeout=_number(v.get("timeout", DEFAULT_PROBE_TIMEOUT), f"{path}.timeout", 0.01),
    )


def health_check_interval(interval: Any, background: Any, path: str) -> float:
    """``general_settings.health_check_interval`` (0: off) and LiteLLM's
    ``background_health_checks`` (on with no interval: LiteLLM's 300 s)."""
    if background is not None and not isinstance(background, bool):
        raise ConfigError(
            f"{path}.background_health_checks", f"expected true or false, got {kind(background)}"
        )
    if interval is not None:
        value = _number(interval, f"{path}.health_check_interval", 0)
        return 0.0 if background is False else value
    return LITELLM_HEALTH_CHECK_INTERVAL if background else 0.0
