"""Client authentication: the master key as a Bearer token, ``x-api-key`` or ``api-key``."""

from __future__ import annotations

import pytest
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from gatewayd.web.auth import is_authorized, presented_key

KEY = "sk-gateway-master"


def request(*headers: tuple[str, str | bytes]) -> Request:
    """A real :class:`Request` (on a dummy channel) carrying ``headers``."""
    req = Request(DummyChannel())
    for name, value in headers:
        raw = value.encode() if isinstance(value, str) else value
        req.requestHeaders.addRawHeader(name.encode(), raw)
    return req


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", f"Bearer {KEY}")],
        [("authorization", f"bearer {KEY}")],
        [("AUTHORIZATION", f"BEARER {KEY}")],
        [("Authorization", f"BeArEr {KEY}")],
        [("Authorization", f"  Bearer   {KEY}  ")],
        [("x-api-key", KEY)],
        [("X-Api-Key", f" {KEY} ")],
        [("api-key", KEY)],
        [("Api-Key", KEY)],
        # A non-Bearer Authorization does not hide a key sent another way.
        [("Authorization", "Basic dXNlcjpwYXNz"), ("x-api-key", KEY)],
        [("Authorization", "Bearer "), ("api-key", KEY)],
    ],
)
def test_accepted(headers: list[tuple[str, str]]) -> None:
    req = request(*headers)
    assert presented_key(req) == KEY.encode()
    assert is_authorized(req, KEY)


@pytest.mark.parametrize(
    "headers",
    [
        [("Authorization", "Bearer wrong")],
        [("Authorization", f"Bearer {KEY}x")],
        [("Authorization", f"Bearer {KEY[:-1]}")],
        [("Authorization", f"Bearer {KEY.upper()}")],
        [("x-api-key", "wrong")],
        [("api-key", "wrong")],
        [("Authorization", f"Bearer{KEY}")],
        [("Authorization", KEY)],
        [("Authorization", f"Basic {KEY}")],
        [("Authorization", f"Token {KEY}")],
        [("x-api-key", "")],
        [("x-goog-api-key", KEY)],
        [("Cookie", f"key={KEY}")],
    ],
)
def test_refused(headers: list[tuple[str, str]]) -> None:
    assert not is_authorized(request(*headers), KEY)


def test_missing_key() -> None:
    req = request()
    assert presented_key(req) is None
    assert not is_authorized(req, KEY)


def test_bearer_takes_precedence_over_other_headers() -> None:
    req = request(("Authorization", "Bearer wrong"), ("x-api-key", KEY))
    assert presented_key(req) == b"wrong"
    assert not is_authorized(req, KEY)


def test_x_api_key_before_api_key() -> None:
    req = request(("api-key", "second"), ("x-api-key", "first"))
    assert presented_key(req) == b"first"


@pytest.mark.parametrize(
    "headers",
    [[], [("Authorization", "Bearer anything")], [("x-api-key", "whatever")]],
)
def test_no_master_key_lets_everyone_in(headers: list[tuple[str, str]]) -> None:
    assert is_authorized(request(*headers), None)


def test_unicode_master_key() -> None:
    key = "clé-秘密"
    assert is_authorized(request(("Authorization", f"Bearer {key}".encode())), key)
    assert is_authorized(request(("x-api-key", key.encode())), key)
    assert not is_authorized(request(("x-api-key", b"cle-")), key)


def test_non_utf8_header_is_refused_not_an_error() -> None:
    assert not is_authorized(request(("Authorization", b"Bearer \xff\xfe")), KEY)


def test_works_with_twisted_dummy_request() -> None:
    """The helpers only need ``getHeader``: Twisted's own test double will do."""
    req = DummyRequest([b"v1", b"chat", b"completions"])
    req.requestHeaders.addRawHeader(b"authorization", f"Bearer {KEY}".encode())
    assert is_authorized(req, KEY)  # type: ignore[arg-type]
    assert not is_authorized(req, "other")  # type: ignore[arg-type]
