"""The console's session cookie and CSRF token, in process: signed, bound to the admin
secrets, expiring, ``Secure`` under TLS."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace
from typing import Any

from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from gatewayd.config import parse_config
from gatewayd.console.pages import Login
from gatewayd.console.session import Admin, csrf_token, issue, verify

MASTER = "sk-master-SECRET-1111111111"
ADMIN = "sk-admin-SECRET-2222222222"


def cfg(master: str = MASTER, admin_key: str = ADMIN, admin: bool = True) -> Any:
    return parse_config(
        json.dumps(
            {
                "model_list": [{"model_name": "m", "params": {"model": "mock/m"}}],
                "general_settings": {"master_key": master},
                "keys": [{"name": "ops", "key": admin_key, "admin": admin}],
            }
        )
    )


def test_cookies_are_signed_expire_and_follow_the_admin_secrets() -> None:
    c = cfg()
    cookie = issue(c, Admin("ops"), now=1000.0)
    assert MASTER not in cookie and ADMIN not in cookie
    assert verify(c, cookie, now=1001.0) == Admin("ops", cookie)
    assert verify(c, cookie, now=1000.0 + 13 * 3600) is None  # expired
    name, expires, mac = cookie.split(".")
    assert verify(c, f"{name}.{int(expires) + 99999}.{mac}", now=1001.0) is None  # tampered
    assert verify(cfg(master="sk-other-master-333333"), cookie, now=1001.0) is None
    assert verify(cfg(admin=False), cookie, now=1001.0) is None  # no longer an admin
    assert csrf_token(c, cookie) != csrf_token(c, issue(c, Admin("ops"), now=2000.0))


def login(secure: bool) -> Request:
    gateway = SimpleNamespace(router=SimpleNamespace(table=SimpleNamespace(config=cfg())))
    request = Request(DummyChannel())
    request.method = b"POST"
    request.content = io.BytesIO(f"key={ADMIN}".encode())
    request.requestHeaders.setRawHeaders(b"host", [b"gw.example:4443"])
    request.requestHeaders.setRawHeaders(b"origin", [b"https://gw.example:4443"])
    request.isSecure = lambda: secure  # type: ignore[method-assign]
    Login(gateway).render_POST(request)
    return request


def test_the_cookie_is_secure_under_tls_only() -> None:
    secure = login(True)
    assert secure.code == 303
    (cookie,) = secure.cookies
    assert b"; Secure" in cookie and b"HttpOnly" in cookie and b"SameSite=strict" in cookie
    (plain,) = login(False).cookies
    assert b"Secure" not in plain
