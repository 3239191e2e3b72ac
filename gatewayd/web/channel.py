"""The client connection: requests parsed by llhttp (through ``httptools``), answered by
twisted.web's :class:`~twisted.web.server.Request` and the resource tree.

Twisted's own parser (``LineReceiver`` and ``HTTPChannel``'s line handlers, a
``Headers.addRawHeader`` per header with its name encoding) was about a fifth of
gatewayd's CPU per request. :class:`GatewayChannel` keeps everything else of
``HTTPChannel`` — the request queue and ``requestDone``, producers and backpressure,
the idle timeout, ``connectionLost`` reaching the request — and drives the Request as
``HTTPChannel`` does: created at the request line, headers filled in one go,
``gotLength``, the body through ``handleContentChunk``, then ``requestReceived``.

llhttp cannot stop at the end of a message, so pipelined requests are parsed ahead:
one that completes while an earlier one is answered waits, with its body, in
``_ready`` and is dispatched in its turn (as Twisted, reading pauses once 16 KiB wait).
A refusal found ahead (a malformed request, a limit) is answered in its turn too.

``GATEWAYD_SERVER_PARSER=twisted`` selects :class:`TwistedChannel`, Twisted's parser
with the same answers, for comparison.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser
from twisted.web.http import RESPONSES, HTTPChannel
from twisted.web.http_headers import Headers, InvalidHeaderName, _nameEncoder
from twisted.web.server import Request

from gatewayd import reqid
from gatewayd.providers.base import openai_error
from gatewayd.reqid import request_id
from gatewayd.web.errors import error_json
from gatewayd.writethrough import write_through

#: Most headers in a request, and most bytes of its request line and headers
#: (``HTTPChannel.maxHeaders``, ``totalHeadersSize``).
MAX_HEADERS = 500
MAX_HEAD = 16384

_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}
#: Header names as received -> as :class:`Headers` keys them (see :func:`header_key`).
HEADER_KEYS: dict[bytes, bytes] = {}


def header_key(name: bytes) -> bytes:
    """``name`` as :class:`Headers` keys it (``HEADER_KEYS.get(name)`` first: no call).

    :raises InvalidHeaderName: not a token."""
    key: bytes = _nameEncoder.encode(name)
    if len(HEADER_KEYS) < 10_000:  # a client inventing names cannot grow it for ever
        HEADER_KEYS[name] = key
    return key


class _Refused(Exception):
    """Raised in a parser callback: answer ``status`` and stop reading."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class AnsweringChannel(HTTPChannel):
    """What both parsers share: writes sent at once (:mod:`gatewayd.writethrough`), the
    connection's addresses asked once, and refusals answered in OpenAI's JSON shape
    (Twisted answers a bare ``400`` with no headers or body)."""

    _rejected = False
    _peer: Any = None
    _host: Any = None

    # Each request asks (Twisted's Request.__init__): the transport builds a new address
    # object per call; a connection's ends do not change.
    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = self.transport.getPeer()  # type: ignore[union-attr]
        return self._peer

    def getHost(self) -> Any:
        if self._host is None:
            self._host = self.transport.getHost()  # type: ignore[union-attr]
        return self._host

    # -- writing: at once when nothing is queued (gatewayd.writethrough) -----------

    _corked: list[bytes] | None = None

    def cork(self) -> None:
        """Hold what is written until :meth:`uncork`, to send it as one."""
        self._corked = []

    def uncork(self) -> None:
        parts, self._corked = self._corked, None
        if parts:
            write_through(self.transport, b"".join(parts))

    def _send(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        else:
            write_through(self.transport, data)

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)  # type: ignore[no-untyped-call]
            return
        parts = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                parts.extend((name, b": ", value, b"\r\n"))
        parts.append(b"\r\n")
        self._send(b"".join(parts))

    def write(self, data: bytes) -> None:
        self._send(data)

    def writeSequence(self, iovec: Any) -> None:
        self._send(b"".join(iovec))

    # -- refusals -------------------------------------------------------------------

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.reject(400, "malformed HTTP request", "bad_request")

    def reject(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` with an OpenAI-shaped error for the newest request, log it,
        and close the connection."""
        if self._rejected or self.transport is None:
            return
        self._rejected = True
        body = error_json(openai_error(message, "invalid_request_error", code))
        reason = RESPONSES.get(status, b"Error")
        request = self.requests[-1] if self.requests else None
        rid = request_id(request.getHeader(reqid.HEADER) if request is not None else None)
        if request is not None and hasattr(request, "request_id"):
            request.request_id = rid
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"x-request-id: %s\r\nconnection: close\r\n\r\n%s"
            % (status, reason, len(body), rid.encode("ascii"), body)
        )
        access_line = getattr(getattr(self, "site", None), "access_line", None)
        if request is not None and hasattr(request, "outcome") and access_line is not None:
            if request.method == Request.method:  # not parsed yet: what the channel saw
                request.method = getattr(self, "_command", b"-")
                request.uri = getattr(self, "_path", b"-")
            request.outcome = "rejected"
            access_line(request, status, len(body))
        self.loseConnection()  # type: ignore[no-untyped-call]


class TwistedChannel(AnsweringChannel):
    """Twisted's HTTP/1.1 parser (``GATEWAYD_SERVER_PARSER=twisted``), with the same
    answers: Twisted would send ``100 Continue`` to any ``Expect`` even when the
    announced body is over the limit."""

    def allHeadersReceived(self) -> None:
        request = self.requests[-1]
        expect = request.requestHeaders.getRawHeaders(b"expect")
        limit = getattr(request, "max_body_size", None)
        if (
            limit is not None
            and expect
            and expect[0].lower() == b"100-continue"
            and self.length is not None
            and self.length > limit
        ):
            # Refuse before the client uploads the body, instead of inviting it.
            self.reject(413, _too_large(limit), "request_too_large")
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        if not self._rejected:  # nothing more is read from a connection being closed
            super().dataReceived(data)  # type: ignore[no-untyped-call]


def _too_large(limit: int) -> str:
    return f"request body larger than max_request_body_size ({limit} bytes)"


#: A request parsed ahead: (request, method, target, version, persistent), or a refusal
#: found ahead: (request, None, status, message, code).
_Ready = tuple[Any, Any, Any, Any, Any]


class GatewayChannel(AnsweringChannel):
    """``HTTPChannel`` with llhttp's parser instead of Twisted's line-based one.

    Kept as ``HTTPChannel`` does it: persistence (``checkPersistence``'s rules: HTTP/1.1
    unless ``Connection: close``, never HTTP/1.0), ``100 Continue`` for HTTP/1.1, the
    header count and size limits, trailers dropped, the idle timeout stopped while a
    request is answered. Refused (by llhttp) where Twisted is lenient: unknown or
    lower-case methods, obsolete line folding, ``Transfer-Encoding`` other than ending
    in ``chunked``, and ``Content-Length`` with ``Transfer-Encoding`` (smuggling)."""

    _stopped = False  # nothing more is parsed: a refusal, or a last request
    _req: Any = None  # the request being parsed
    _req_head = False  # ... and in ``requests`` (no earlier one is still answered)
    _in_body = False  # its headers are complete
    _continue_due = False  # it wants ``100 Continue`` when its turn comes
    _advancing = False
    _progress = False  # a parser callback ran during this read
    _quiet = 0  # bytes read with no callback: a header httptools is still gathering
    _ahead = 0  # bytes read while a request is answered

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._parser = HttpRequestParser(self)
        self._ready: deque[_Ready] = deque()
        self._url = b""
        self._raw: dict[bytes, list[bytes]] = {}
        self._count = 0
        self._size = 0
        self._keep = True
        self._method = b""
        self._version = b""

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            return  # a connection being closed, or after its last request
        self.resetTimeout()  # type: ignore[no-untyped-call]
        if self._handlingRequest:
            self._ahead += len(data)
            if self._ahead > self._optimisticEagerReadSize and not self._waitingForTransport:
                # As Twisted: a client that sends and never reads is made to wait.
                self._networkProducer.pauseProducing()
        self._progress = False
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            # Twisted answers an Upgrade as a plain request: so does gatewayd (llhttp
            # stops after it; what follows is the next request).
            rest = data[upgrade.args[0] :]
            if rest and not self._stopped:
                self.dataReceived(rest)
            return
        except HttpParserCallbackError as e:
            cause = e.__context__
            if not isinstance(cause, _Refused):
                raise  # a bug past the parser (its traceback in the context): to the reactor
            self._fail(cause.status, cause.message, cause.code)
            return
        except HttpParserError as e:
            if not self._stopped:  # bytes after a last request are dropped, as Twisted
                self._fail(400, f"malformed HTTP request: {e}", "bad_request")
            return
        if self._progress:
            self._quiet = 0
        else:
            # httptools gathers a header until it ends: bound what it may hold.
            self._quiet += len(data)
            if self._quiet > MAX_HEAD:
                self._fail(
                    431, f"request headers larger than {MAX_HEAD} bytes", "headers_too_large"
                )

    # -- the parser's callbacks ------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._progress = True
        if self._req is None:
            self._begin()
            self._url = url
        else:
            self._url += url
        if len(self._url) > MAX_HEAD:
            raise _Refused(414, f"request target longer than {MAX_HEAD} bytes", "uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._progress = True
        if self._in_body:
            return  # a chunked body's trailer: dropped, as Twisted's decoder does
        self._count += 1
        self._size += len(name) + len(value) + 4
        if self._count > MAX_HEADERS or self._size > MAX_HEAD:
            raise _Refused(
                431,
                f"more than {MAX_HEADERS} headers or {MAX_HEAD} bytes of them",
                "headers_too_large",
            )
        key = HEADER_KEYS.get(name)
        if key is None:
            try:
                key = header_key(name)
            except InvalidHeaderName:
                raise _Refused(
                    400, "malformed HTTP request: bad header name", "bad_request"
                ) from None
        if value and value[-1] in (32, 9):  # llhttp skips leading blanks, not trailing
            value = value.rstrip(b" \t")
        values = self._raw.get(key)
        if values is None:
            self._raw[key] = [value]
        else:
            values.append(value)

    def on_headers_complete(self) -> None:
        self._progress = True
        self._in_body = True
        request, raw, parser = self._req, self._raw, self._parser
        self._method = parser.get_method()
        given_version = parser.get_http_version()
        version = self._version = _VERSIONS.get(given_version) or b"HTTP/" + given_version.encode()
        if version == b"HTTP/0.9":  # a request line without a version: Twisted's 400
            raise _Refused(400, "malformed HTTP request: no HTTP version", "bad_request")
        keep = version == b"HTTP/1.1"  # HTTPChannel.checkPersistence
        connection = raw.get(b"Connection")
        if keep and connection is not None:
            if b"close" in connection[0].lower().replace(b",", b" ").split():
                request.responseHeaders._rawHeaders[b"Connection"] = [b"close"]
                keep = False
        self._keep = keep
        length: int | None = None
        if b"Transfer-Encoding" not in raw:  # llhttp checked it ends in chunked
            given = raw.get(b"Content-Length")
            length = 0 if given is None else int(given[0])  # digits: llhttp checked
        expect = raw.get(b"Expect")
        if expect is not None and expect[0].lower() == b"100-continue":
            limit = getattr(request, "max_body_size", None)
            if limit is not None and length is not None and length > limit:
                # Refused before the client uploads the body, instead of inviting it.
                raise _Refused(413, _too_large(limit), "request_too_large")
            if version == b"HTTP/1.1":
                if self._req_head:
                    self._send100Continue()  # type: ignore[no-untyped-call]
                else:
                    self._continue_due = True  # not into an earlier request's answer
        if b"Cookie" in raw:
            request.parseCookies()
        request.gotLength(length)

    def on_body(self, body: bytes) -> None:
        self._progress = True
        self._req.handleContentChunk(body)

    def on_message_complete(self) -> None:
        self._progress = True
        request, self._req = self._req, None
        if not self._keep:
            self._stopped = True  # as HTTPChannel: what follows is dropped
        if self._req_head and not self._handlingRequest:
            self._dispatch(request, self._method, self._url, self._version, self._keep)
        else:
            self._ready.append((request, self._method, self._url, self._version, self._keep))

    # -- the request queue -----------------------------------------------------------

    def _begin(self) -> None:
        """A request line begins: its Request, in ``requests`` if it is next."""
        request = self.requestFactory(self, 0)
        self._req = request
        # Filled as the headers come: a refusal half way still sees the request id.
        self._raw = request.requestHeaders._rawHeaders = {}
        self._count = 0
        self._size = 0
        self._in_body = False
        if not self._handlingRequest and not self._ready:
            self.requests.append(request)
            self._req_head = True
        else:
            self._req_head = False

    def _dispatch(
        self, request: Any, method: bytes, url: bytes, version: bytes, keep: bool
    ) -> None:
        """HTTPChannel.allContentReceived: the request goes to the resource tree."""
        self.persistent = keep
        # The idle timeout is off while the request is answered (however long it takes).
        if self.timeOut:
            self._savedTimeOut = self.setTimeout(None)  # type: ignore[no-untyped-call]
        self._handlingRequest = True
        self._ahead = 0
        request.requestReceived(method, url, version)

    def _fail(self, status: int, message: str, code: str) -> None:
        """Refuse the request being parsed: now, or in its turn if one is answered."""
        self._stopped = True
        if self._req is None:
            self._begin()  # garbage where a request line should be: still logged
            self._url = b""
        request, self._req = self._req, None
        if self._url and request.method == Request.method:  # what was parsed of it
            request.method, request.uri = self._parser.get_method(), self._url
        if self._req_head and not self._handlingRequest:
            self._refuse(request, status, message, code)
        else:
            self._ready.append((request, None, status, message, code))

    def _refuse(self, request: Any, status: int, message: str, code: str) -> None:
        self._command = self._path = b"-"  # for reject: a request line not even begun
        if not self.requests or self.requests[-1] is not request:
            self.requests.append(request)
        self.reject(status, message, code)

    def requestDone(self, request: Any) -> None:
        """HTTPChannel.requestDone, then the next request parsed ahead, if any."""
        if request != self.requests[0]:
            raise TypeError
        del self.requests[0]
        if not self._waitingForTransport:
            self._networkProducer.resumeProducing()
        if not self.persistent:
            self.loseConnection()  # type: ignore[no-untyped-call]
            return
        self._handlingRequest = False
        if self._savedTimeOut:
            self.setTimeout(self._savedTimeOut)  # type: ignore[no-untyped-call]
        if self._ready or self._req is not None:
            self._advance()

    def _advance(self) -> None:
        """Dispatch what was parsed ahead, in order; a loop, not a recursion, when the
        requests are answered at once."""
        if self._advancing:
            return
        self._advancing = True
        try:
            ready = self._ready
            while ready and not self._handlingRequest and not self._rejected:
                request, method, url, version, keep = ready.popleft()
                if method is None:  # a refusal: (request, None, status, message, code)
                    self._refuse(request, url, version, keep)
                    return
                self.requests.append(request)
                self._dispatch(request, method, url, version, keep)
            if not ready and not self._handlingRequest and self._req is not None:
                if not self._req_head:
                    self._req_head = True
                    self.requests.append(self._req)
                if self._continue_due:
                    self._continue_due = False
                    self._send100Continue()  # type: ignore[no-untyped-call]
        finally:
            self._advancing = False


def channel_class() -> type[AnsweringChannel]:
    """The channel for new connections: ``GATEWAYD_SERVER_PARSER=twisted`` for Twisted's
    parser, llhttp's otherwise."""
    if os.environ.get("GATEWAYD_SERVER_PARSER", "").strip().lower() == "twisted":
        return TwistedChannel
    return GatewayChannel
