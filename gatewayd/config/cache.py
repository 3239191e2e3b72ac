"""``general_settings.cache``: the response cache and request coalescing.

Also read in LiteLLM's spelling: ``litellm_settings.cache: true`` with
``litellm_settings.cache_params: {type, host, port, password, ttl, ...}``.
See docs/cache.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gatewayd.config.errors import ConfigError
from gatewayd.config.redis_address import RedisAddress
from gatewayd.config.values import ValueReader, kind

#: The keys of ``general_settings.cache``.
CACHE_KEYS = (
    "type",
    "url",
    "ttl",
    "max_bytes",
    "endpoints",
    "scope",
    "coalesce_only",
    "coalesce",
    "namespace",
    # LiteLLM's cache_params spellings of the Redis address.
    "host",
    "port",
    "password",
    "supported_call_types",
)

#: ``endpoints`` names: the routed operations a cache may answer.
CACHE_ENDPOINTS = ("chat/completions", "completions", "embeddings", "responses", "messages")

#: LiteLLM's call-type names (``supported_call_types``) mapped to ours.
LITELLM_CALL_TYPES = {
    "completion": "chat/completions",
    "acompletion": "chat/completions",
    "text_completion": "completions",
    "atext_completion": "completions",
    "embedding": "embeddings",
    "aembedding": "embeddings",
    "responses": "responses",
    "aresponses": "responses",
    "anthropic_messages": "messages",
    # Short names.
    "chat": "chat/completions",
    "chat_completions": "chat/completions",
}

#: LiteLLM's ``type`` names for the in-process cache.
MEMORY_TYPES = ("memory", "local", "in-memory", "in_memory")


@dataclass(frozen=True)
class CacheSettings:
    """The parsed cache section (absent: no cache, no coalescing)."""

    #: ``memory`` (per process) or ``redis`` (shared by every instance and worker).
    type: str = "memory"
    #: ``type: redis``: its own Redis; None = the state store's (``state_store``).
    url: str | None = field(default=None, repr=False)
    #: Seconds an answer is served from the cache.
    ttl: float = 3600.0
    #: ``type: memory``: the bound, least recently used out.
    max_bytes: int = 64 * 1024 * 1024
    #: The endpoints cached (default: all of :data:`CACHE_ENDPOINTS`).
    endpoints: frozenset[str] = frozenset(CACHE_ENDPOINTS)
    #: ``key``: each client key its own cache; ``shared``: one for every key.
    scope: str = "key"
    #: Coalesce identical requests in flight (on by default with the cache).
    coalesce: bool = True
    #: Only coalesce: nothing is stored or read.
    coalesce_only: bool = False
    #: A prefix of every key (LiteLLM's ``namespace``): a new one starts an empty cache.
    namespace: str = ""


def _redis_url(reader: ValueReader, d: dict[str, Any], path: str) -> str | None:
    url = reader._str(d, "url", path)
    if url is None and d.get("host") is not None:  # LiteLLM: host/port/password
        host = reader._str(d, "host", path)
        port = reader._int(d, "port", path, 6379, 1)
        password = reader._str(d, "password", path)
        auth = f":{password}@" if password else ""
        url = f"redis://{auth}{host}:{port}/0"
    if url is not None:
        try:
            RedisAddress.parse(url)
        except ValueError as e:
            raise ConfigError(f"{path}.url", str(e)) from None
    return url


def _endpoints(reader: ValueReader, d: dict[str, Any], path: str) -> frozenset[str]:
    key = "endpoints" if d.get("endpoints") is not None else "supported_call_types"
    raw = d.get(key)
    if raw is None:
        return frozenset(CACHE_ENDPOINTS)
    if not isinstance(raw, list):
        raise ConfigError(f"{path}.{key}", f"expected a list of endpoints, got {kind(raw)}")
    out: set[str] = set()
    for i, v in enumerate(raw):
        name = LITELLM_CALL_TYPES.get(v, v) if isinstance(v, str) else v
        if isinstance(name, str):
            name = name.strip("/").removeprefix("v1/")
        if name not in CACHE_ENDPOINTS:
            raise ConfigError(
                f"{path}.{key}[{i}]",
                f"unknown endpoint {v!r}; expected some of {', '.join(CACHE_ENDPOINTS)}",
            )
        out.add(name)
    return frozenset(out)


def cache_settings(
    reader: ValueReader, raw: Any, path: str, params: Any = None, params_path: str = ""
) -> CacheSettings | None:
    """``raw``: the ``cache`` value (a mapping, or LiteLLM's ``true`` with ``params``,
    the ``cache_params`` mapping, read at ``params_path``). None: no cache."""
    if raw is None or raw is False:
        return None
    if raw is True:
        if params is None:
            return CacheSettings()
        d = reader._mapping(params, params_path)
        path = params_path
    else:
        d = reader._mapping(raw, path)
    reader._unknown(d, set(CACHE_KEYS), path)
    type_ = reader._str(d, "type", path) or "memory"
    if type_ in MEMORY_TYPES:
        type_ = "memory"
    elif type_ != "redis":
        raise ConfigError(
            f"{path}.type", f"unsupported cache type {type_!r}; expected memory or redis"
        )
    scope = reader._str(d, "scope", path) or "key"
    if scope not in ("key", "shared"):
        raise ConfigError(f"{path}.scope", f"expected key or shared, got {scope!r}")
    return CacheSettings(
        type=type_,
        url=_redis_url(reader, d, path),
        ttl=reader._float(d, "ttl", path, 3600.0, positive=True),
        max_bytes=reader._int(d, "max_bytes", path, 64 * 1024 * 1024, 1),
        endpoints=_endpoints(reader, d, path),
        scope=scope,
        coalesce=reader._bool(d, "coalesce", path, True),
        coalesce_only=reader._bool(d, "coalesce_only", path, False),
        namespace=reader._str(d, "namespace", path) or "",
    )


def check_cache_store(cache: CacheSettings | None, state_store: str | None, path: str) -> None:
    """``type: redis`` needs a ``url`` or the state store's Redis."""
    if cache is not None and cache.type == "redis" and cache.url is None and state_store is None:
        raise ConfigError(
            f"{path}.type",
            "redis needs a url (cache.url) or a Redis state store (general_settings.state_store)",
        )
