"""Client authentication: the master key, and the client keys of ``keys:``."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from twisted.web.server import Request

from gatewayd.config.keys import ClientKey
from gatewayd.config.model import GatewayConfig


def presented_key(request: Request) -> bytes | None:
    """The key the client sent: ``Authorization: Bearer``, ``x-api-key`` or ``api-key``."""
    auth = request.getHeader(b"authorization")
    if auth:
        scheme, _, token = auth.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    for name in (b"x-api-key", b"api-key"):
        value = request.getHeader(name)
        if value:
            return value.strip()
    return None


def is_authorized(request: Request, master_key: str | None) -> bool:
    """True when no master key is set, or the client presented it (constant time)."""
    if master_key is None:
        return True
    key = presented_key(request)
    if key is None:
        return False
    return hmac.compare_digest(key, master_key.encode())


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a client key, or the master key (``key`` None: all access)."""

    key: ClientKey | None = None

    @property
    def name(self) -> str | None:
        """The key's name, for logs, metrics and headers (never the key itself)."""
        return None if self.key is None else self.key.name

    def allows(self, alias: str) -> bool:
        return self.key is None or self.key.allows(alias)


MASTER = Caller()


def authenticate(request: Request, config: GatewayConfig) -> Caller | None:
    """The caller, or None (401). Without a master key and without ``keys:`` the
    gateway is open; with ``keys:`` alone, every request needs one of them."""
    master = config.general.master_key
    keys = config.keys
    if master is None and not keys.keys:
        return MASTER
    presented = presented_key(request)
    if presented is None:
        return None
    if master is not None and hmac.compare_digest(presented, master.encode()):
        return MASTER
    key = keys.lookup(presented)
    return None if key is None else Caller(key)
