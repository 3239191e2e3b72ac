"""The ``/ui`` tree: sign-in, the pages (one HTML shell, its JS and CSS shipped as
package data), the JSON API and the playground.

    GET  /ui/login            the sign-in form      POST /ui/login   key -> cookie
    POST /ui/logout           (CSRF token)
    GET  /ui/ /ui/requests /ui/keys /ui/playground   the pages (signed in)
    GET  /ui/static/{console.js,console.css}
    GET  /ui/api/session  /ui/api/overview  /ui/api/deployments  /ui/api/keys
    GET  /ui/api/requests[/{id}]
    POST /ui/api/playground/{chat,completions,messages,responses}   (CSRF token)

Every answer carries a strict Content-Security-Policy (scripts and styles from this
origin only, no inline code, no other host) and is never cached.
"""

from __future__ import annotations

import importlib.resources
import time
from typing import Any
from urllib.parse import parse_qs

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from gatewayd.console.api import (
    ConsoleGateway,
    api_error,
    deployments_info,
    keys_info,
    overview_info,
    request_detail,
    requests_list,
    session_info,
)
from gatewayd.console.session import (
    Admin,
    admin_for_key,
    authenticate_admin,
    cookie_header,
    csrf_ok,
    issue,
)
from gatewayd.web.resource_kinds import NotFound

CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGES = ("", "requests", "keys", "playground")
_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
}


def _static(name: str) -> bytes:
    return importlib.resources.files("gatewayd.console").joinpath("static", name).read_bytes()


def _secure_headers(request: Request) -> None:
    request.setHeader(b"content-security-policy", CSP)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"cache-control", b"no-store")


def _redirect(request: Request, to: bytes) -> bytes:
    request.setResponseCode(303)
    request.setHeader(b"location", to)
    return b""


class ConsoleRoot(Resource):
    """``/ui``: every path below it is resolved here (see the module docstring)."""

    isLeaf = True

    def __init__(self, gateway: ConsoleGateway, api: Resource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway
        #: The ``/v1`` resources the playground posts reach (the gateway's own).
        self.api = api
        self.files = {
            n: _static(n) for n in ("index.html", "login.html", "console.js", "console.css")
        }

    def _playground_target(self, dialect: str) -> IResource | None:
        children: dict[bytes, Any] = self.api.children
        if dialect == "chat":
            chat = children.get(b"chat")
            return None if chat is None else chat.children.get(b"completions")
        if dialect in ("completions", "messages", "responses"):
            target: IResource | None = children.get(dialect.encode())
            return target
        return None

    def _file(self, request: Request, name: str) -> bytes:
        request.setHeader(b"content-type", _TYPES[name.rsplit(".", 1)[1]])
        return self.files[name]

    def render(self, request: Request) -> bytes | int:
        _secure_headers(request)
        if hasattr(request, "dialect"):
            request.dialect = "console"
        if not self.gateway.router.table.config.general.ui:
            # Off: as any unknown path (which authenticates first, revealing nothing).
            result: bytes | int = NotFound().render(request)
            return result
        path = [p.decode("utf-8", "replace") for p in request.postpath or ()]
        while path and path[-1] == "" and len(path) > 1:
            path.pop()
        method = request.method
        head = path[0] if path else ""
        if head == "login":
            return self._login(request)
        if head == "static" and len(path) == 2 and path[1] in ("console.js", "console.css"):
            return self._file(request, path[1])  # no secret in them: served signed out too
        config = self.gateway.router.table.config
        admin = authenticate_admin(request, config, time.time())
        if head == "api":
            if admin is None:
                request.setHeader(b"www-authenticate", b'Bearer realm="gatewayd console"')
                return api_error(request, 401, "sign in with the master key or an admin key")
            return self._api(request, admin, path[1:])
        if admin is None:
            return _redirect(request, b"/ui/login")
        if head == "logout" and method == b"POST":
            if not csrf_ok(request, config, admin):
                return api_error(request, 403, "missing or wrong CSRF token")
            request.setHeader(b"set-cookie", cookie_header(b"", request.isSecure(), 0))
            return _redirect(request, b"/ui/login")
        if method in (b"GET", b"HEAD") and len(path) <= 1 and head in PAGES:
            return self._file(request, "index.html")
        return api_error(request, 404, "no such page")

    def _login(self, request: Request) -> bytes:
        if request.method != b"POST":
            return self._file(request, "login.html")
        # The site leaves form bodies unparsed (gatewayd.web.request): read it here.
        body = request.content.read(64 * 1024) if request.content is not None else b""
        presented = (parse_qs(body).get(b"key") or [b""])[0].strip()
        admin = admin_for_key(self.gateway.router.table.config, presented) if presented else None
        if admin is None:
            return _redirect(request, b"/ui/login?failed=1")
        token = issue(self.gateway.router.table.config, admin, time.time())
        request.setHeader(b"set-cookie", cookie_header(token, request.isSecure()))
        return _redirect(request, b"/ui/")

    def _api(self, request: Request, admin: Admin, path: list[str]) -> bytes | int:
        name = path[0] if path else ""
        get = request.method in (b"GET", b"HEAD")
        if name == "playground":
            if request.method != b"POST":
                return api_error(request, 405, "POST a request body to the playground")
            if not csrf_ok(request, self.gateway.router.table.config, admin):
                return api_error(request, 403, "missing or wrong CSRF token")
            target = self._playground_target(path[1] if len(path) > 1 else "")
            if target is None:
                return api_error(request, 404, "dialect: chat, completions, messages or responses")
            # The gateway's own endpoint answers, as this admin: its key's limits apply.
            request.console_caller = admin.caller  # type: ignore[attr-defined]
            request.setHeader(b"content-security-policy", CSP)
            answer: bytes | int = target.render(request)
            return answer
        if not get:
            return api_error(request, 405, "only GET here")
        if name == "session" and len(path) == 1:
            return session_info(self.gateway, request, admin)
        if name == "overview" and len(path) == 1:
            return overview_info(self.gateway, request)
        if name == "deployments" and len(path) == 1:
            return deployments_info(self.gateway, request)
        if name == "requests" and len(path) == 1:
            return requests_list(self.gateway, request)
        if name == "requests" and len(path) == 2:
            return request_detail(self.gateway, request, path[1])
        if name == "keys" and len(path) == 1:
            return keys_info(self.gateway, request)
        return api_error(request, 404, "unknown console API path")
