"""Who may use the console, and its session cookie.

The master key, or a client key with ``admin: true``. Signing in (or a Bearer header)
presents the key; the cookie then carries a signed, expiring statement of who signed in:
``v1.<m|k>.<name>.<expiry>.<hmac>``. Its HMAC key is derived from the credential itself
(the master key, or the key's stored digest), so the cookie holds no secret, needs no
server-side store (every worker checks it alike) and dies with a changed or removed key.
The CSRF token of a session is another HMAC of the cookie: state-changing posts made
with the cookie must send it in ``x-csrf-token`` (with ``SameSite=Strict`` besides).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from twisted.web.server import Request

from gatewayd.config.keys import ClientKey
from gatewayd.config.model import GatewayConfig
from gatewayd.web.auth import Caller, presented_key

COOKIE = b"gatewayd_ui"
#: Seconds a session lasts.
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Admin:
    """A signed-in operator: the master key (``key`` None) or an admin client key."""

    key: ClientKey | None
    #: Signed in by the session cookie (posts then need the CSRF token).
    by_cookie: bool = False
    token: bytes = b""

    @property
    def name(self) -> str:
        return "master key" if self.key is None else self.key.name

    @property
    def caller(self) -> Caller:
        return Caller(self.key)


def _secret(config: GatewayConfig, key: ClientKey | None) -> bytes | None:
    if key is None:
        master = config.general.master_key
        if master is None:
            return None
        material = master.encode()
    else:
        material = key.digest
    return hashlib.sha256(b"gatewayd-ui-session\0" + material).digest()


def admin_for_key(config: GatewayConfig, presented: bytes) -> Admin | None:
    """The admin the presented key is, or None (not the master key, not an admin key)."""
    master = config.general.master_key
    if master is not None and hmac.compare_digest(presented, master.encode()):
        return Admin(None)
    key = config.keys.lookup(presented)
    if key is not None and key.admin:
        return Admin(key)
    return None


def issue(config: GatewayConfig, admin: Admin, now: float) -> bytes:
    """A session cookie value for ``admin``, valid for :data:`SESSION_SECONDS`."""
    secret = _secret(config, admin.key)
    assert secret is not None
    kind = b"m" if admin.key is None else b"k"
    name = base64.urlsafe_b64encode(admin.name.encode()).rstrip(b"=")
    payload = b"v1.%s.%s.%d" % (kind, name, int(now) + SESSION_SECONDS)
    sig = hmac.new(secret, payload, hashlib.sha256).hexdigest().encode()
    return payload + b"." + sig


def verify(config: GatewayConfig, token: bytes, now: float) -> Admin | None:
    """The admin a cookie value stands for, or None (forged, expired, key gone)."""
    parts = token.split(b".")
    if len(parts) != 5 or parts[0] != b"v1" or not parts[3].isdigit():
        return None
    kind, name_b64, expiry = parts[1], parts[2], int(parts[3])
    if expiry < now:
        return None
    key: ClientKey | None = None
    if kind == b"k":
        try:
            name = base64.urlsafe_b64decode(name_b64 + b"=" * (-len(name_b64) % 4)).decode()
        except ValueError:
            return None
        key = next((k for k in config.keys.keys if k.name == name and k.admin), None)
        if key is None:
            return None
    elif kind != b"m":
        return None
    secret = _secret(config, key)
    if secret is None:
        return None
    payload = b".".join(parts[:4])
    good = hmac.new(secret, payload, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(good, parts[4]):
        return None
    return Admin(key, by_cookie=True, token=token)


def csrf_token(config: GatewayConfig, admin: Admin) -> str:
    """The CSRF token of a cookie session ("" for a Bearer caller, who needs none)."""
    secret = _secret(config, admin.key)
    if not admin.by_cookie or secret is None:
        return ""
    return hmac.new(secret, b"csrf\0" + admin.token, hashlib.sha256).hexdigest()


def authenticate_admin(request: Request, config: GatewayConfig, now: float) -> Admin | None:
    """The admin behind a request: the Bearer (or x-api-key) header, else the cookie."""
    presented = presented_key(request)
    if presented is not None:
        return admin_for_key(config, presented)
    cookie = request.getCookie(COOKIE)
    if cookie:
        return verify(config, cookie, now)
    return None


def csrf_ok(request: Request, config: GatewayConfig, admin: Admin) -> bool:
    """A post may go on: made with a Bearer header, or with the session's CSRF token."""
    if not admin.by_cookie:
        return True
    sent = request.getHeader(b"x-csrf-token")
    want = csrf_token(config, admin)
    return bool(sent and want) and hmac.compare_digest(sent or b"", want.encode())


def cookie_header(value: bytes, secure: bool, max_age: int = SESSION_SECONDS) -> bytes:
    """The ``Set-Cookie`` value: HttpOnly, SameSite=Strict, Secure under TLS."""
    out = b"%s=%s; Path=/ui; Max-Age=%d; HttpOnly; SameSite=Strict" % (COOKIE, value, max_age)
    return out + (b"; Secure" if secure else b"")
