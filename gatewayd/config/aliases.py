"""``general_settings.alias_settings``: per-alias settings over the general ones.

One mapping ``{ALIAS: {routing_strategy, hedge, cache}}`` shared by the routing
strategies, hedging and the response cache, so that each feature reads its
per-alias override from one place: :meth:`AliasSettings.for_alias`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.values import kind

#: The keys an alias's entry may hold.
ALIAS_KEYS = ("routing_strategy", "hedge", "cache")


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class AliasSettings:
    """One alias's overrides; ``None`` means "as in general_settings"."""

    routing_strategy: str | None = None
    #: The raw ``hedge`` mapping, validated by the hedging feature's parser.
    hedge: Mapping[str, Any] | None = None
    #: ``False`` keeps the alias out of the response cache.
    cache: bool = True
    #: Keys this module does not know: kept for the features that parse them.
    extra: Mapping[str, Any] = field(default_factory=_empty)


#: The settings of an alias that has no entry.
DEFAULT_ALIAS_SETTINGS = AliasSettings()


def parse_alias_settings(
    v: Any, path: str, strategies: tuple[str, ...]
) -> Mapping[str, AliasSettings]:
    """``v``: the raw ``alias_settings`` value; ``path``: where it was read, for errors.
    Aliases are checked against ``model_list`` by :func:`check_alias_settings`."""
    if v is None:
        return MappingProxyType({})
    if not isinstance(v, dict):
        raise ConfigError(path, f"expected a mapping of alias to settings, got {kind(v)}")
    out: dict[str, AliasSettings] = {}
    for alias, entry in v.items():
        where = f"{path}.{alias}"
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ConfigError(where, f"expected a mapping like {{cache: false}}, got {kind(entry)}")
        strategy = entry.get("routing_strategy")
        if strategy is not None and strategy not in strategies:
            raise ConfigError(
                f"{where}.routing_strategy",
                f"unknown strategy {strategy!r}; expected one of {', '.join(strategies)}",
            )
        hedge = entry.get("hedge")
        if hedge is not None and not isinstance(hedge, dict):
            raise ConfigError(f"{where}.hedge", f"expected a mapping, got {kind(hedge)}")
        cache = entry.get("cache", True)
        if not isinstance(cache, bool):
            raise ConfigError(f"{where}.cache", f"expected true or false, got {kind(cache)}")
        extra = {k: val for k, val in entry.items() if k not in ALIAS_KEYS}
        out[str(alias)] = AliasSettings(
            routing_strategy=strategy,
            hedge=MappingProxyType(dict(hedge)) if hedge is not None else None,
            cache=cache,
            extra=MappingProxyType(extra),
        )
    return MappingProxyType(out)


def check_alias_settings(
    settings: Mapping[str, AliasSettings], path: str, aliases: set[str]
) -> None:
    """An entry for an alias that ``model_list`` does not have is a mistake worth refusing."""
    for alias in settings:
        if alias not in aliases and "*" not in alias:
            raise ConfigError(
                f"{path}.{alias}", f"alias {alias!r} is not a model_name in model_list"
            )
