"""The console's gate: every ``/ui`` resource but the sign-in page asks :func:`admin_of`."""

from __future__ import annotations

from typing import Any, Protocol

from twisted.web.server import Request

from gatewayd.config.model import GatewayConfig
from gatewayd.console.session import COOKIE, Admin, admin_for_key, csrf_token, verify
from gatewayd.limits import Limiter
from gatewayd.routing import Router


class ConsoleGateway(Protocol):
    """What the console needs of the running service."""

    @property
    def router(self) -> Router: ...

    @property
    def limiter(self) -> Limiter: ...

    request_log: Any


def config_of(gateway: ConsoleGateway) -> GatewayConfig:
    return gateway.router.table.config


def bearer(request: Request) -> bytes | None:
    auth = request.getHeader(b"authorization")
    if auth:
        scheme, _, token = auth.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    return None


def admin_of(gateway: ConsoleGateway, request: Request) -> Admin | None:
    """The signed-in admin: by Bearer key, else by session cookie; None otherwise."""
    config = config_of(gateway)
    presented = bearer(request)
    if presented is not None:
        return admin_for_key(config, presented)
    cookie = request.getCookie(COOKIE.encode())
    if cookie:
        return verify(config, cookie.decode("ascii", "replace"))
    return None


def csrf_ok(gateway: ConsoleGateway, request: Request, admin: Admin) -> bool:
    """A state-changing call is safe: Bearer (a browser never adds it by itself), or the
    session's token in ``X-CSRF-Token`` (a page of another origin cannot read it)."""
    if admin.cookie is None:
        return True
    sent = request.getHeader(b"x-csrf-token")
    if not sent:
        return False
    import hmac

    want = csrf_token(config_of(gateway), admin.cookie)
    return hmac.compare_digest(sent.decode("ascii", "replace"), want)
