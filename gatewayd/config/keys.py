"""Client keys (the top-level ``keys:`` list) and the shared state store settings.

A key is kept only as its SHA-256 digest: the file may give ``key`` (a literal,
``os.environ/VAR`` or ``${VAR}``) or ``key_sha256`` so that it holds no secret at all.
Keys are identified by ``name`` everywhere (logs, metrics, headers, counters), which is
also what lets usage survive a reload.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.redis_address import RedisAddress
from gatewayd.config.values import ValueReader, kind

_KEY_FIELDS = {
    "key",
    "key_sha256",
    "name",
    "models",
    "rpm",
    "tpm",
    "max_parallel_requests",
    "budget",
    "metadata",
    "admin",
}
_BUDGET_FIELDS = {"tokens", "usd", "period"}
_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FAILURE_MODES = ("open", "closed")


def parse_period(text: str) -> float:
    """``30s``, ``15m``, ``1h``, ``1d``, ``30d``, ``1w`` in seconds; ValueError otherwise."""
    m = _PERIOD.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a period like 1h, 1d or 30d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Budget:
    """Tokens and/or USD a key may spend per period (the period opens at first use)."""

    tokens: int | None
    usd: float | None
    period: float
    #: As written (``30d``), for /key/info.
    period_text: str


@dataclass(frozen=True)
class ClientKey:
    """One client key: who it is, what it may use, its limits."""

    name: str
    digest: bytes = field(repr=False)
    #: The aliases it may use; None = all.
    models: tuple[str, ...] | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_parallel_requests: int | None = None
    budget: Budget | None = None
    metadata: Mapping[str, Any] = field(default_factory=_empty)
    #: May sign in to the operator console (``/ui``).
    admin: bool = False

    def allows(self, alias: str) -> bool:
        """``models`` names the alias, or a wildcard alias (``ollama/*``) that matches it."""
        if self.models is None or alias in self.models:
            return True
        return any("*" in m and _wildcard(m).match(alias) is not None for m in self.models)


@functools.lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    """``ollama/*`` as a regular expression (each ``*`` matches anything)."""
    return re.compile("^" + ".*".join(map(re.escape, pattern.split("*"))) + "$")


@dataclass(frozen=True)
class KeyTable:
    """Every configured client key, looked up by digest."""

    keys: tuple[ClientKey, ...] = ()

    @property
    def by_digest(self) -> Mapping[bytes, ClientKey]:
        return {k.digest: k for k in self.keys}

    def lookup(self, presented: bytes) -> ClientKey | None:
        """The key whose digest matches, compared in constant time."""
        d = digest(presented)
        found = None
        for k in self.keys:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(k.digest, d):
                found = k
        return found


class KeySection(ValueReader):
    """Reads ``keys:`` and the state store settings."""

    def _keys(self, raw: Any, aliases: set[str]) -> KeyTable:
        if raw is None:
            return KeyTable()
        if not isinstance(raw, list):
            raise ConfigError("keys", f"expected a list of keys, got {kind(raw)}")
        keys: list[ClientKey] = []
        names: set[str] = set()
        digests: set[bytes] = set()
        for i, entry in enumerate(raw):
            k = self._key(entry, f"keys[{i}]", aliases)
            if k.name in names:
                raise ConfigError(f"keys[{i}].name", f"{k.name!r} is used by another key")
            if k.digest in digests:
                raise ConfigError(f"keys[{i}]", "the same key is listed twice")
            names.add(k.name)
            digests.add(k.digest)
            keys.append(k)
        return KeyTable(tuple(keys))

    def _key(self, entry: Any, path: str, aliases: set[str]) -> ClientKey:
        entry = self._mapping(entry, path)
        self._unknown(entry, _KEY_FIELDS, path)
        # metadata is the user's own: passed on unresolved is wrong too, so resolve all.
        entry = {k: self.resolve(v, f"{path}.{k}") for k, v in entry.items() if k in _KEY_FIELDS}
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(
                f"{path}.name", "is required: shown in logs and metrics instead of the key"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            # It goes into headers, log lines and metric labels.
            raise ConfigError(f"{path}.name", "must not contain control characters")
        if ("key" in entry) == ("key_sha256" in entry):
            raise ConfigError(path, "give exactly one of key and key_sha256")
        if "key" in entry:
            secret = entry["key"]
            if not isinstance(secret, str) or not secret:
                raise ConfigError(f"{path}.key", "must be a non-empty string")
            d = digest(secret)
        else:
            hexd = entry["key_sha256"]
            if not isinstance(hexd, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", hexd):
                raise ConfigError(
                    f"{path}.key_sha256", "must be 64 hex digits (sha256sum of the key)"
                )
            d = bytes.fromhex(hexd)
        models = entry.get("models")
        allowed: tuple[str, ...] | None = None
        if models is not None:
            if isinstance(models, str):
                models = [models]
            if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
                raise ConfigError(f"{path}.models", "expected a list of aliases")
            for m in models:
                if m not in aliases:
                    raise ConfigError(
                        f"{path}.models", f"alias {m!r} is not a model_name in model_list"
                    )
            allowed = tuple(models)
        metadata = entry.get("metadata")
        if metadata is not None:
            metadata = self._mapping(metadata, f"{path}.metadata")
        return ClientKey(
            name=name.strip(),
            digest=d,
            models=allowed,
            rpm=self._opt_int(entry, "rpm", path),
            tpm=self._opt_int(entry, "tpm", path),
            max_parallel_requests=self._opt_int(entry, "max_parallel_requests", path),
            budget=self._budget(entry.get("budget"), f"{path}.budget"),
            metadata=MappingProxyType(dict(metadata or {})),
            admin=self._bool(entry, "admin", path),
        )

    def _budget(self, raw: Any, path: str) -> Budget | None:
        if raw is None:
            return None
        raw = self._mapping(raw, path)
        self._unknown(raw, _BUDGET_FIELDS, path)
        tokens = self._opt_int(raw, "tokens", path)
        usd = self._opt_float(raw, "usd", path)
        if tokens is None and usd is None:
            raise ConfigError(path, "needs tokens and/or usd")
        period_text = self._str(raw, "period", path) or "30d"
        try:
            period = parse_period(period_text)
        except ValueError as e:
            raise ConfigError(f"{path}.period", str(e)) from None
        return Budget(tokens, usd, period, period_text.strip())

    # -- the state store -------------------------------------------------------

    def _state_store(
        self, g: Mapping[str, Any], section: Any, raw: Mapping[str, Any]
    ) -> str | None:
        """``state_store`` URL, else LiteLLM's ``redis_url`` / ``redis_host`` (+ port,
        password) from any settings section, else ``REDIS_URL``; validated here, never
        echoing a password. The redis_* keys are resolved only when used."""
        url = self._str(g, "state_store", section("state_store"))
        where = f"{section('state_store')}.state_store"
        litellm: dict[str, tuple[Any, str]] = {}
        for name in ("litellm_settings", "router_settings", "general_settings"):
            body = raw.get(name)
            if isinstance(body, dict):
                for k in ("redis_url", "redis_host", "redis_port", "redis_password"):
                    if body.get(k) is not None:
                        litellm[k] = (body[k], f"{name}.{k}")

        def read(k: str) -> Any:
            value, path = litellm[k]
            return self.resolve(value, path)

        if url is None and "redis_url" in litellm:
            url = read("redis_url")
            where = litellm["redis_url"][1]
            if not isinstance(url, str):
                raise ConfigError(where, f"expected a redis:// URL, got {kind(url)}")
        if url is None and "redis_host" in litellm:
            host = read("redis_host")
            if not isinstance(host, str) or not host:
                raise ConfigError(litellm["redis_host"][1], "expected a host name")
            port = 6379
            if "redis_port" in litellm:
                port = self._int({"p": read("redis_port")}, "p", litellm["redis_port"][1], 6379, 1)
            password = read("redis_password") if "redis_password" in litellm else None
            return repr_url(host, port, None if password is None else str(password))
        if url is None and self.env.get("REDIS_URL"):
            url = self.env["REDIS_URL"]
            where = "REDIS_URL"
        if url is None:
            return None
        try:
            RedisAddress.parse(url)
        except ValueError as e:
            raise ConfigError(where, f"{e} (redis://[:password@]host:port/db)") from None
        return url

    def _state_failure(self, g: Mapping[str, Any], section: Any) -> str:
        mode = self._str(g, "state_store_failure", section("state_store_failure")) or "open"
        if mode not in FAILURE_MODES:
            raise ConfigError(
                f"{section('state_store_failure')}.state_store_failure",
                f"must be open or closed, got {mode!r}",
            )
        return mode


def repr_url(host: str, port: int, password: str | None) -> str:
    from urllib.parse import quote

    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host}:{port}/0"


__all__ = [
    "Budget",
    "ClientKey",
    "KeySection",
    "KeyTable",
    "digest",
    "parse_period",
]
