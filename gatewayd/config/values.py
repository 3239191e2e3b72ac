"""Typed readers for config values: environment references, numbers, strings, mappings.

Each error names its path (``model_list[2].params.timeout: ...``); unknown keys become
warnings, not errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from gatewayd.config.errors import ConfigError

_ENV_PREFIX = "os.environ/"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def kind(value: Any) -> str:
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


class ValueReader:
    """Reads typed values out of raw YAML mappings; collects warnings."""

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
            raise ConfigError(where, f"expected a number, got {kind(v)}")
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
            raise ConfigError(f"{path}.{key}", f"expected true or false, got {kind(v)}")
        return v

    def _str(self, d: Mapping[str, Any], key: str, path: str) -> str | None:
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, float):  # str(1.10) is "1.1": not what was written
            raise ConfigError(f"{path}.{key}", "expected a string, got a number: quote the value")
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise ConfigError(f"{path}.{key}", f"expected a string, got {kind(v)}")
        return str(v)

    def _secret(self, d: Mapping[str, Any], key: str, path: str) -> str | None:
        """A key or token: a string or absent. Never coerced (YAML may have made a number of
        it), and the value is never put in the message."""
        v = d.get(key)
        if v is None or isinstance(v, str):
            return v
        raise ConfigError(
            f"{path}.{key}",
            f"expected a string, got {kind(v)}: quote the value so that it is read as written",
        )

    def _mapping(self, v: Any, path: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise ConfigError(path, f"expected a mapping, got {kind(v)}")
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
