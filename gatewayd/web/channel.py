"""The client connection: requests parsed by llhttp (through ``httptools``), answered by
twisted.web's :class:`~twisted.web.server.Request` and the resource tree.

Twisted's own parser (``LineReceiver`` and ``HTTPChannel``'s line handlers, a
``Headers.addRawHeader`` per header with its name encoding) was about a fifth of
gatewayd's CPU per request. :class:`GatewayChannel` keeps everything else of
``HTTPChannel`` — the request queue and ``requestDone``, producers and backpressure,
the idle timeout, ``connectionLost`` reaching the request — and drives the Request as
``HTTPChannel`` does: created at the request line, headers filled in one go,
``gotLength``, the body through ``handleContentChunk``, then ``requestReceived``.

Pipelining: as Twisted, what arrives while a request is answered waits unparsed (and
reading pauses once 16 KiB wait). llhttp cannot stop at the end of a message, so the
rest of the read in which a request goes to the tree (at most 16 KiB: reads are parsed
in slices) is parsed ahead: a request completed there waits, with its body, in
``_ready``, and a refusal found there (malformed, over a limit) is answered in its turn.

``GATEWAYD_SERVER_PARSER=twisted`` selects :class:`TwistedChannel`, Twisted's parser
with the same answers, for comparison.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpRequestParser
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http_headers import InvalidHeaderName, _nameEncoder
from twisted.web.server import Request

from gatewayd.web.answering import AnsweringChannel, TwistedChannel, too_large

#: Most headers in a request, and most bytes of its request line and headers
#: (``HTTPChannel.maxHeaders``, ``totalHeadersSize``).
MAX_HEADERS = 500
MAX_HEAD = 16384

#: The most of one read parsed at once: llhttp cannot stop after a request, so this
#: bounds what is parsed ahead of an answer (Twisted's own bound on what waits).
_SLICE = 16384
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


#: A request parsed ahead: (request, method, target, version, persistent), or a refusal
#: found ahead: (request, None, status, message, code).
_Ready = tuple[Any, Any, Any, Any, Any]


class GatewayChannel(AnsweringChannel):
    """``HTTPChannel`` with llhttp's parser instead of Twisted's line-based one.

    Kept as ``HTTPChannel`` does it: persistence (``checkPersistence``'s rules: HTTP/1.1
    unless ``Connection: close``, never HTTP/1.0), ``100 Continue`` for HTTP/1.1, the
    header count and size limits, trailers dropped, no idle timeout while a request is
    answered (a timer armed once, not moved per read). Refused (by llhttp) where
    Twisted is lenient: unknown or lower-case methods, obsolete line folding,
    ``Transfer-Encoding`` other than ending in ``chunked``, ``Content-Length`` with
    ``Transfer-Encoding`` (smuggling), and a request line without a version."""

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

    # -- the idle timeout ------------------------------------------------------------
    # HTTPChannel moves TimeoutMixin's timer on every read, and cancels and re-creates it
    # around every request: three reactor calls per request. Here the timer is armed
    # once and, when it fires, looks at when the connection was last active: idle for
    # ``timeOut`` seconds with no request answered, it is closed as HTTPChannel closes
    # it; otherwise the timer is armed for the rest.

    _idle: float | None = None
    _active_at = 0.0

    def connectionMade(self) -> None:
        self._idle = self.timeOut
        clock: Any = getattr(getattr(self, "factory", None), "reactor", None)
        if clock is None:
            from twisted.internet import reactor as clock
        self._now: Callable[[], float] = clock.seconds
        self._active_at = self._now()
        super().connectionMade()

    def timeoutConnection(self) -> None:
        idle = self._idle
        if idle is not None:
            left = idle if self._handlingRequest else self._active_at + idle - self._now()
            if left > 0:
                self.setTimeout(left)  # type: ignore[no-untyped-call]
                return
        super().timeoutConnection()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        # The parser holds this channel's bound callbacks: dropped, neither is left in a
        # reference cycle for the collector. Nothing is parsed after the connection went.
        self._stopped = True
        self.__dict__.pop("_parser", None)

    # -- reading -----------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._stopped:
            if self._rejected:  # lingering after an early answer: read and dropped
                self.discard(data)
            return  # a connection being closed, or after its last request
        self._active_at = self._now()
        if self._handlingRequest:
            self._hold(data)
        elif len(data) <= _SLICE:
            self._feed(data)
        else:
            self._read(data)

    def _hold(self, data: bytes) -> None:
        """As HTTPChannel: what comes while a request is answered waits, unparsed, and
        a client that sends without reading is made to wait past 16 KiB."""
        self._dataBuffer.append(data)
        self._ahead += len(data)
        if self._ahead > self._optimisticEagerReadSize and not self._waitingForTransport:
            self._networkProducer.pauseProducing()

    def _read(self, data: bytes) -> None:
        """Parse ``data``, at most a slice past the point where a request went to the
        tree (llhttp does not stop there): the rest waits for its answer."""
        if len(data) <= _SLICE:
            self._feed(data)
            return
        for start in range(0, len(data), _SLICE):
            self._feed(data[start : start + _SLICE])
            if self._stopped:
                return
            if self._handlingRequest:
                rest = data[start + _SLICE :]
                if rest:
                    self._hold(rest)
                return

    def _feed(self, data: bytes) -> None:
        self._progress = False
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as upgrade:
            # Twisted answers an Upgrade as a plain request: so does gatewayd (llhttp
            # stops after it; what follows is the next request).
            rest = data[upgrade.args[0] :]
            if rest and not self._stopped:
                if self._handlingRequest:
                    self._hold(rest)
                else:
                    self._read(rest)
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
                raise _Refused(413, too_large(limit), "request_too_large")
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
        self._handlingRequest = True  # and so no idle timeout, however long it takes
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
        if request is not self.requests[0]:  # (Twisted's ``!=`` calls Request.__eq__)
            raise TypeError
        del self.requests[0]
        if not self._waitingForTransport:
            self._networkProducer.resumeProducing()
        if not self.persistent:
            self.loseConnection()  # type: ignore[no-untyped-call]
            return
        self._handlingRequest = False
        self._active_at = self._now()  # idle from now
        if self._ready or self._req is not None or self._dataBuffer:
            self._advance()

    def _advance(self) -> None:
        """Dispatch what was parsed ahead, in order, then parse what waited; a loop, not
        a recursion, when the requests are answered at once."""
        if self._advancing:
            return
        self._advancing = True
        try:
            while not self._handlingRequest and not self._rejected:
                if self._ready:
                    request, method, url, version, keep = self._ready.popleft()
                    if method is None:  # a refusal: (request, None, status, message, code)
                        self._refuse(request, url, version, keep)
                        return
                    self.requests.append(request)
                    self._dispatch(request, method, url, version, keep)
                elif self._req is not None and not self._req_head:
                    self._req_head = True  # the one half parsed is next
                    self.requests.append(self._req)
                    if self._continue_due:
                        self._continue_due = False
                        self._send100Continue()  # type: ignore[no-untyped-call]
                elif self._dataBuffer and not self._stopped:
                    data = b"".join(self._dataBuffer)
                    self._dataBuffer = []
                    self._ahead = 0
                    self._read(data)
                else:
                    return
        finally:
            self._advancing = False


def channel_class() -> type[AnsweringChannel]:
    """The channel for new connections: ``GATEWAYD_SERVER_PARSER=twisted`` for Twisted's
    parser, llhttp's otherwise."""
    if os.environ.get("GATEWAYD_SERVER_PARSER", "").strip().lower() == "twisted":
        return TwistedChannel
    return GatewayChannel
