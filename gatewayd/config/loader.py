"""Read the YAML file, resolve environment references, validate, build typed objects.

Everything is checked before anything listens; each problem is one line that names
its path (``model_list[2].params.model: ...``). The sections are read by
:mod:`gatewayd.config.general` and :mod:`gatewayd.config.deployments`.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import Any

import yaml

from gatewayd.config.deployments import DeploymentSection, unique_ids
from gatewayd.config.errors import ConfigError
from gatewayd.config.general import GeneralSection
from gatewayd.config.model import GatewayConfig
from gatewayd.config.pace import pace
from gatewayd.config.values import kind

_TOP_KEYS = {"model_list", "general_settings", "router_settings", "litellm_settings", "keys"}

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_DATE = "tag:yaml.org,2002:timestamp"
# libyaml's parser is several times faster than the pure-Python one; same errors and marks.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """PyYAML's safe loader, reading YAML 1.1's odd numbers and booleans as written.

    YAML 1.1 reads ``0123`` as 83, ``0x1A`` as 26, ``1:30`` as 90, ``12_345`` as 12345
    and ``no``/``on`` as booleans, and ``2024-10-21`` as a date: an unquoted key, name or
    version would silently become another value. Here only plain decimal numbers and
    ``true``/``false`` are typed; every other plain scalar stays the string as written."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT, _BOOL, _DATE)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    # Called for each scalar (by libyaml's composer too) and each node: where a paced
    # reload (gatewayd.config.pace) gives the event loop its turns.
    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        pace()
        return super().resolve(kind, value, implicit)

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        pace()
        return super().construct_object(node, deep)


Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def load_config(path: str, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and validate the file at ``path``; raise :class:`ConfigError` naming the problem."""
    try:
        # O_NONBLOCK: opening a FIFO nobody writes must not hang (it is refused just below).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ConfigError("", f"cannot read config file {path}: not a regular file")
        with open(fd, encoding="utf-8") as f:
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
        raw = yaml.load(text, Loader=Loader)
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
        deployments = []
        for i, e in enumerate(model_list):
            pace()
            deployments.append(self._deployment(e, i))
        deployments = unique_ids(deployments)
        aliases = {d.model_name for d in deployments}
        self._check_fallbacks(general, aliases)
        keys = self._keys(raw.get("keys"), aliases)
        return GatewayConfig(tuple(deployments), general, source, tuple(self.warnings), keys)
