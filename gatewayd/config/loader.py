"""Read the YAML file, resolve environment references, validate, build typed objects.

Everything is checked before anything listens; each problem is one line that names
its path (``model_list[2].params.model: ...``). The sections are read by
:mod:`gatewayd.config.general` and :mod:`gatewayd.config.deployments`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml

from gatewayd.config.deployments import DeploymentSection, unique_ids
from gatewayd.config.errors import ConfigError
from gatewayd.config.general import GeneralSection
from gatewayd.config.model import GatewayConfig
from gatewayd.config.values import kind

_TOP_KEYS = {"model_list", "general_settings", "router_settings", "litellm_settings", "keys"}


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
        raise ConfigError("", f"{source}: the top level must be a mapping, not {kind(raw)}")
    return _Builder(env).build(raw, source)


class _Builder(GeneralSection, DeploymentSection):
    def build(self, raw: dict[str, Any], source: str) -> GatewayConfig:
        raw = self._mapping(raw, "")
        self._unknown(raw, _TOP_KEYS, "")
        general = self._general(raw)
        model_list = raw.get("model_list")
        if model_list is None:
            raise ConfigError("model_list", "is required: a list of model entries")
        if not isinstance(model_list, list):
            raise ConfigError(
                "model_list", f"expected a list of model entries, got {kind(model_list)}"
            )
        if not model_list:
            raise ConfigError("model_list", "is empty: configure at least one model")
        deployments = [self._deployment(e, i) for i, e in enumerate(model_list)]
        deployments = unique_ids(deployments)
        aliases = {d.model_name for d in deployments}
        self._check_fallbacks(general, aliases)
        keys = self._keys(raw.get("keys"), aliases)
        return GatewayConfig(tuple(deployments), general, source, tuple(self.warnings), keys)
