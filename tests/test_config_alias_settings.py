"""``general_settings.alias_settings``: per-alias overrides, each error naming its path."""

from __future__ import annotations

import pytest

from gatewayd.config import ConfigError, parse_config

BASE = """
model_list:
  - model_name: a
    params: {model: mock/a}
  - model_name: b
    params: {model: mock/b}
general_settings:
  alias_settings:
"""


def test_overrides_are_read_per_alias() -> None:
    cfg = parse_config(
        BASE
        + "    a: {routing_strategy: least-busy, cache: false, hedge: {after_ms: 200}}\n"
        + "    b: {}\n"
    )
    a = cfg.general.for_alias("a")
    assert a.routing_strategy == "least-busy"
    assert a.cache is False
    assert a.hedge == {"after_ms": 200}
    b = cfg.general.for_alias("b")
    assert (b.routing_strategy, b.cache, b.hedge) == (None, True, None)
    assert cfg.general.for_alias("not-configured").cache is True


@pytest.mark.parametrize(
    ("entry", "path", "reason"),
    [
        ("a: {routing_strategy: fastest}", "alias_settings.a.routing_strategy", "unknown strategy"),
        ("a: {cache: 'no'}", "alias_settings.a.cache", "true or false"),
        ("a: {hedge: 5}", "alias_settings.a.hedge", "mapping"),
        ("a: [1]", "alias_settings.a", "mapping"),
        ("nope: {cache: false}", "alias_settings.nope", "not a model_name"),
    ],
)
def test_errors_name_the_key(entry: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + "    " + entry + "\n")
    assert path in str(e.value)
    assert reason in str(e.value)
