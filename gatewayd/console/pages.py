"""``/ui`` itself: the sign-in form, the one-page console and its static files, sign-out,
and the playground's POSTs (handed to the gateway's own endpoints)."""

from __future__ import annotations

from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from gatewayd.console.api import ApiRoot, NotFoundJSON
from gatewayd.console.guard import ConsoleGateway, admin_of, config_of, csrf_ok
from gatewayd.console.replies import json_error, secure_headers
from gatewayd.console.session import COOKIE, SESSION_SECONDS, admin_for_key, issue

_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
    "png": b"image/png",
}


def static(name: str) -> bytes:
    return files("gatewayd.console").joinpath("static", name).read_bytes()


def _send(request: Request, name: str, status: int = 200, body: bytes | None = None) -> bytes:
    secure_headers(request)
    request.setResponseCode(status)
    request.setHeader(b"content-type", _TYPES[name.rsplit(".", 1)[-1]])
    return static(name) if body is None else body


def _redirect(request: Request, to: bytes) -> bytes:
    secure_headers(request)
    request.setResponseCode(303)
    request.setHeader(b"location", to)
    return b""


def _same_origin(request: Request) -> bool:
    """A form POST from this origin (or a client that sends no Origin)."""
    origin = request.getHeader(b"origin")
    if origin is None or origin == b"null":
        return origin is None
    host = request.getHeader(b"host") or b""
    return urlsplit(origin.decode("latin-1")).netloc.encode("latin-1") == host


def _refused(request: Request, status: int, why: bytes) -> bytes:
    page = static("login.html").replace(
        b"<!--error-->", b'<p class="error" id="error">' + why + b"</p>"
    )
    return _send(request, "login.html", status, page)


class Login(Resource):
    """GET: the form. POST ``key=...``: a session cookie and on to the console."""

    isLeaf = True

    def __init__(self, gateway: ConsoleGateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render_GET(self, request: Request) -> bytes:
        return _send(request, "login.html")

    def render_POST(self, request: Request) -> bytes:
        if not _same_origin(request):
            return _refused(request, 403, b"Sign in from this gateway's own page.")
        assert request.content is not None
        request.content.seek(0)
        form = parse_qs(request.content.read(64 * 1024).decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        admin = admin_for_key(config_of(self.gateway), key.encode()) if key else None
        if admin is None:
            return _refused(request, 401, b"That key cannot sign in here.")
        request.addCookie(
            COOKIE.encode(),
            issue(config_of(self.gateway), admin).encode(),
            path=b"/ui",
            max_age=str(SESSION_SECONDS).encode(),
            httpOnly=True,
            secure=request.isSecure(),
            sameSite="strict",
        )
        return _redirect(request, b"/ui/")


class Logout(Resource):
    isLeaf = True

    def __init__(self, gateway: ConsoleGateway) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway

    def render_POST(self, request: Request) -> bytes:
        admin = admin_of(self.gateway, request)
        if admin is not None and not csrf_ok(self.gateway, request, admin):
            return json_error(request, 403, "missing or wrong X-CSRF-Token", "csrf")
        request.addCookie(
            COOKIE.encode(),
            b"",
            path=b"/ui",
            max_age=b"0",
            httpOnly=True,
            secure=request.isSecure(),
            sameSite="strict",
        )
        return _redirect(request, b"/ui/login")


class Static(Resource):
    """The console's JS and CSS (public: they hold no data)."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        name = path.decode("ascii", "replace")
        if name in ("console.js", "console.css", "login.css"):
            return StaticFile(name)
        return NotFoundJSON()


class StaticFile(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.name = name

    def render_GET(self, request: Request) -> bytes:
        return _send(request, self.name)


class Playground(Resource):
    """POST ``/ui/api/playground/{chat|messages|responses}``: the body goes to the
    gateway's own endpoint for that dialect, as the master key would send it."""

    isLeaf = True

    def __init__(self, gateway: ConsoleGateway, targets: dict[bytes, Any], caller: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway
        self.targets = targets
        self.caller = caller

    def render_POST(self, request: Request) -> bytes | int:
        admin = admin_of(self.gateway, request)
        if admin is None:
            return json_error(request, 401, "sign in first", "unauthorized")
        if not csrf_ok(self.gateway, request, admin):
            return json_error(request, 403, "missing or wrong X-CSRF-Token", "csrf")
        target = self.targets.get(request.postpath[0] if request.postpath else b"")
        if target is None:
            return json_error(request, 404, "dialects: chat, messages, responses", "not_found")
        # The admin is checked: the endpoint takes the request as the master key's.
        request.caller = self.caller  # type: ignore[attr-defined]
        result: bytes | int = target.render(request)
        return result


class ConsoleRoot(Resource):
    """``/ui``: the console page for an admin, else the sign-in form."""

    def __init__(self, gateway: ConsoleGateway, targets: dict[bytes, Any], caller: Any) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gateway = gateway
        api = ApiRoot(gateway)
        api.putChild(b"playground", Playground(gateway, targets, caller))
        self.putChild(b"api", api)
        self.putChild(b"login", Login(gateway))
        self.putChild(b"logout", Logout(gateway))
        self.putChild(b"static", Static())  # type: ignore[no-untyped-call]

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return NotFoundJSON()

    def render_GET(self, request: Request) -> bytes:
        if admin_of(self.gateway, request) is None:
            return _redirect(request, b"/ui/login")
        if not request.path.endswith(b"/"):
            return _redirect(request, b"/ui/")
        return _send(request, "console.html")
