"""Who may use the console, and how they stay signed in.

The master key or a client key with ``admin: true``, presented once in the sign-in form
(then a session cookie) or on every call (``Authorization: Bearer``). The cookie holds
the admin's *name*, an expiry and an HMAC of both: nothing secret, nothing kept on the
server, so every worker accepts it. The HMAC key is derived from the admin secrets
(the master key, the admin keys' digests): changing them signs everyone out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from gatewayd.config.keys import digest
from gatewayd.config.model import GatewayConfig

COOKIE = "gatewayd_ui"
#: A session lasts this long (seconds).
SESSION_SECONDS = 12 * 3600
#: The name shown for the master key.
MASTER = "master key"


@dataclass(frozen=True)
class Admin:
    """A signed-in operator: their name, and the cookie that signed them in (if any)."""

    name: str
    cookie: str | None = None


def _secret(config: GatewayConfig) -> bytes:
    h = hashlib.sha256(b"gatewayd-ui-session\0")
    master = config.general.master_key
    if master is not None:
        h.update(digest(master))
    for k in config.keys.keys:
        if k.admin:
            h.update(k.name.encode() + b"\0" + k.digest)
    return h.digest()


def admin_for_key(config: GatewayConfig, presented: bytes) -> Admin | None:
    """The admin whose key was presented (constant-time compares), or None."""
    master = config.general.master_key
    if master is not None and hmac.compare_digest(presented, master.encode()):
        return Admin(MASTER)
    key = config.keys.lookup(presented)
    if key is not None and key.admin:
        return Admin(key.name)
    return None


def _admin_names(config: GatewayConfig) -> set[str]:
    names = {k.name for k in config.keys.keys if k.admin}
    if config.general.master_key is not None:
        names.add(MASTER)
    return names


def issue(config: GatewayConfig, admin: Admin, now: float | None = None) -> str:
    """The cookie value for ``admin``."""
    expires = int((time.time() if now is None else now) + SESSION_SECONDS)
    name = base64.urlsafe_b64encode(admin.name.encode()).decode().rstrip("=")
    payload = f"{name}.{expires}"
    mac = hmac.new(_secret(config), payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def verify(config: GatewayConfig, cookie: str, now: float | None = None) -> Admin | None:
    """The admin a cookie signs in, if it is genuine, current, and still an admin."""
    try:
        name_b64, expires, mac = cookie.split(".")
        want = hmac.new(
            _secret(config), f"{name_b64}.{expires}".encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(mac, want):
            return None
        if int(expires) < (time.time() if now is None else now):
            return None
        name = base64.urlsafe_b64decode(name_b64 + "=" * (-len(name_b64) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    if name not in _admin_names(config):
        return None
    return Admin(name, cookie)


def csrf_token(config: GatewayConfig, cookie: str) -> str:
    """The token the pages send with each POST (``X-CSRF-Token``): bound to the session,
    readable only by a page of this origin (from ``/ui/api/session``)."""
    return hmac.new(_secret(config), b"csrf\0" + cookie.encode(), hashlib.sha256).hexdigest()
