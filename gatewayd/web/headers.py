"""Response header names as :class:`~twisted.web.http_headers.Headers` keys them, made
once, and header values from config names made once per name: so that the hot path
sets headers without re-encoding or re-checking them."""

from __future__ import annotations

from twisted.web.http_headers import _nameEncoder, _sanitizeLinearWhitespace

from gatewayd.observability import request_ids as reqid


def canonical(name: bytes) -> bytes:
    """A header name as :class:`Headers` keys it (for :meth:`GatewayRequest.put_header`)."""
    key: bytes = _nameEncoder.encode(name)
    return key


X_REQUEST_ID = canonical(reqid.HEADER)
SERVER = canonical(b"server")
DATE = canonical(b"date")
CONTENT_TYPE = canonical(b"content-type")
CONTENT_LENGTH = canonical(b"content-length")
X_GATEWAYD_ATTEMPTS = canonical(b"x-gatewayd-attempts")
X_GATEWAYD_MODEL = canonical(b"x-gatewayd-model")
CACHE_CONTROL = canonical(b"cache-control")
X_ACCEL_BUFFERING = canonical(b"x-accel-buffering")
X_GATEWAYD_DEPLOYMENT = canonical(b"x-gatewayd-deployment")
_VALUES: dict[str, bytes] = {}


def header_value(text: str) -> bytes:
    """``text`` (an alias, a deployment id: names from the config) as a header value,
    encoded and cleaned of line breaks as ``setHeader`` would, once per distinct name."""
    value = _VALUES.get(text)
    if value is None:
        if len(_VALUES) >= 4096:
            _VALUES.clear()
        value = _VALUES[text] = _sanitizeLinearWhitespace(text.encode("utf-8"))
    return value
