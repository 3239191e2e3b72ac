"""Where the shared store is: ``redis://[:password@]host:port/db``, parsed without a
client library (the config loader validates it)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class RedisAddress:
    """Where the store is: parsed from ``redis://[:password@]host:port/db``."""

    host: str
    port: int = 6379
    db: int = 0
    password: str | None = None

    def __repr__(self) -> str:  # the password never shows
        return f"redis://{self.host}:{self.port}/{self.db}"

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Raise ValueError naming what is wrong (never echoing the password)."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError("must be a redis://[:password@]host:port/db URL")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError("has an invalid port") from None
        if not parts.hostname:
            raise ValueError("has no host")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError("database must be a number (redis://host:port/0)")
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, int(path or 0), password)
