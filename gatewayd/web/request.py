"""The HTTP request and site: a bounded body, what the access log reports, fixed leaf
paths found in one lookup. The connection is :mod:`gatewayd.web.channel`."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes as unquote

from twisted.python.failure import Failure
from twisted.web.http import _GenericHTTPChannelProtocol, datetimeToString, parse_qs
from twisted.web.server import Request, Site, version

from gatewayd.config.model import GeneralSettings
from gatewayd.observability import request_ids as reqid
from gatewayd.observability.log import PerSecond, get_logger
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.observability.request_ids import request_id
from gatewayd.providers.base import openai_error
from gatewayd.tracing.request_trace import NOOP_TRACE, NOOP_TRACING, RequestTrace, Tracing
from gatewayd.web.accesslog import access_line
from gatewayd.web.answering import AnsweringChannel
from gatewayd.web.channel import HEADER_KEYS, channel_class, header_key
from gatewayd.web.channel import GatewayChannel as GatewayChannel  # where it was
from gatewayd.web.cors import answer_cors
from gatewayd.web.errors import write_error_object
from gatewayd.web.headers import CONTENT_LENGTH, DATE, SERVER, X_REQUEST_ID
from gatewayd.web.upload import UploadSpool, done_refusing, start_upload

log = get_logger("gatewayd.web")


class GatewayRequest(Request):
    """A request whose body is dropped, not stored, past the size limit."""

    max_body_size: int = 64 * 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.started = time.monotonic()
        self.too_large = False
        self._body_bytes = 0
        # Filled by the handlers for the access log.
        self.alias: str | None = None
        #: The client's API dialect (chat, responses, messages): a metrics label.
        self.dialect = "chat"
        self.endpoint: str | None = None  # api_endpoints' name (a label); None: the dialect

        self.deployment: str | None = None
        self.attempts = 0
        self.fallback: str | None = None
        self.hedge: str | None = None  # a hedged request: which copy won (primary, hedge)
        self.ttfb: float | None = None
        self.bytes_sent = 0
        self.outcome: str | None = None
        self.upstream_seconds: float | None = None  # JSON answers: time spent upstream
        self.caller: Any = None  # web.auth.Caller: who sent it
        self.key_name: str | None = None  # the client key's name (never the key)
        self.usage: dict[str, Any] | None = None  # a stream's usage, for the limits
        self.cached = False  # answered from the response cache (gatewayd.cache)
        self.upload: UploadSpool | None = None  # a multipart upload's parts, spooled
        self.logged = False
        #: The request-log stage writes this request's row (not the access line).
        self.request_logged = False
        #: The client's ``x-request-id`` or a minted one (set in :meth:`process`).
        self.request_id = ""
        self.trace: RequestTrace = NOOP_TRACE
        #: Called once if the client goes before the answer is finished (cheaper than
        #: a ``notifyFinish`` Deferred per request for what is almost never used).
        self.on_lost: Callable[[], None] | None = None
        self._counted: GatewaySite | None = None
        site = getattr(self.channel, "site", None)
        if isinstance(site, GatewaySite):
            self.max_body_size = site.settings().max_request_body_size

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # The absolute form (``POST http://host/v1/chat/completions``, RFC 9112 3.2.2),
        # which some proxies and clients send, names the same resource as its path.
        if path[:8].lower().startswith((b"http://", b"https://")):
            rest = path.split(b"//", 1)[1]
            path = b"/" + rest.split(b"/", 1)[1] if b"/" in rest else b"/"
        if self.upload is not None and self.upload.refused:
            done_refusing(self, self.upload)  # answered 413 while the body came
            return
        if self._parsePOSTFormSubmission:  # not gatewayd's site: Twisted's, forms parsed
            super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]
            return
        # Twisted's requestReceived without what only form parsing needs (the body's
        # length and a Content-Type look-up).
        self.content.seek(0, 0)  # type: ignore[union-attr]
        self.method, self.uri, self.clientproto = command, path, version
        self.path, query, args = path.partition(b"?")
        self.args = parse_qs(args, 1) if query else {}
        self.process()

    def process(self) -> None:
        self.request_id = request_id(self.getHeader(reqid.HEADER))
        # Every response carries it (a sane id: safe characters only, see reqid).
        self.put_header(X_REQUEST_ID, self.request_id.encode("ascii"))
        site = getattr(self.channel, "site", None)
        if isinstance(site, GatewaySite):
            if site.tracing.enabled:
                self.trace = site.tracing.start(
                    self.method.decode("ascii", "replace"),
                    self.path.decode("utf-8", "replace"),
                    self._header,
                    self.request_id,
                    getattr(self.getClientAddress(), "host", "-"),
                )
            site.active_requests += 1
            self._counted = site
            if answer_cors(self, site.settings().cors_allow_origins):
                return  # a preflight, answered here
        self._dispatch()

    def _dispatch(self) -> None:
        """``twisted.web.server.Request.process`` with the ``Date`` header made once a
        second (``gmtime`` and formatting per request otherwise), fixed leaf paths found
        in one lookup; no encoders (gatewayd's resources have none)."""
        self.site = self.channel.site  # type: ignore[attr-defined]
        self.put_header(SERVER, version)
        self.put_header(DATE, _http_date(time.time()))
        site = self.site
        leaf = site.leaf_for(self.path) if isinstance(site, GatewaySite) else None
        if leaf is None:
            self.prepath = []
            self.postpath = list(map(unquote, self.path[1:].split(b"/")))
            if self.path == b"*":
                self._handleStar()
                return
        try:
            if leaf is None:
                resource = site.getResourceFor(self)
            else:
                # A fixed path to a leaf (POST /v1/chat/completions): where Twisted's walk
                # down the tree would end, with the same prepath, found in one lookup.
                resource = leaf[0]
                self.prepath = list(leaf[1])
                self.postpath = []
                self.sitepath: list[bytes] = []
            self.render(resource)
        except BaseException:
            self.processingFailed(Failure())

    def getHeader(self, key: Any) -> Any:
        """Twisted's ``getHeader`` (the last value, or None) without a call into
        :class:`Headers` per look-up: handlers ask for several headers per request."""
        if type(key) is not bytes:
            return super().getHeader(key)
        name = HEADER_KEYS.get(key)
        if name is None:
            name = header_key(key)
        values = self.requestHeaders._rawHeaders.get(name)
        return values[-1] if values else None

    def put_header(self, name: bytes, value: bytes) -> None:
        """``setHeader`` for gatewayd's own headers: ``name`` one of this module's
        canonical constants, ``value`` known to be safe (no CR or LF: digits, constants,
        checked ids), so neither needs Twisted's per-call encoding and checking."""
        self.responseHeaders._rawHeaders[name] = [value]

    def _uncount(self) -> None:
        site, self._counted = self._counted, None
        if site is not None:
            site.active_requests -= 1

    def _cleanup(self) -> None:
        if self.upload is not None:  # its spooled parts (temporary files) go now
            self.upload.close()
        self._uncount()
        # The exchange's or relay's hook holds this request: dropped, no reference cycle
        # is left for the collector (issue 18).
        self.on_lost = None
        super()._cleanup()  # type: ignore[no-untyped-call]

    def _header(self, name: str) -> str | None:
        value = self.getHeader(name.encode("ascii"))
        return None if value is None else value.decode("latin-1")

    def upstream_headers(self) -> tuple[tuple[str, str], ...]:
        """Headers every upstream attempt carries: the request id, and the client's
        W3C trace context (replaced by the attempt's own span when tracing is on)."""
        out = [("x-request-id", self.request_id)]
        for name in (b"traceparent", b"tracestate"):
            value = self.getHeader(name)
            if value is not None and len(value) <= 512 and all(32 <= c < 127 for c in value):
                out.append((name.decode(), value.decode("ascii")))
        return tuple(out)

    def processingFailed(self, reason: Failure) -> Failure:
        """A bug in a handler: logged with its traceback; the client gets OpenAI's shape."""
        log.failure("internal error while handling a request", failure=reason)
        if not self.startedWriting:
            body = write_error_object(
                self, 500, openai_error("internal error in gatewayd", "api_error", "internal_error")
            )
            self.setHeader(b"content-length", b"%d" % len(body))
            self.write(body)
        if not self.finished:
            self.finish()
        return reason

    def gotLength(self, length: int | None) -> None:
        self.upload = start_upload(self, length)
        if self.upload is not None:
            self.content = io.BytesIO()
            return
        if length is not None and length > self.max_body_size:
            self.too_large = True
            self.content = io.BytesIO()
            return
        if length is not None and length < 100_000:
            # Twisted's choice of file for that length, without asking the site for a
            # getContentFile it does not have (an AttributeError raised per request).
            self.content = io.BytesIO()
            return
        super().gotLength(length)  # type: ignore[no-untyped-call]

    def handleContentChunk(self, data: bytes) -> None:
        if self.upload is not None:  # multipart (web/upload.py): parsed as it comes
            self.upload.take(self, data)
            return
        if self.too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self.max_body_size:
            self.too_large = True
            self.content = io.BytesIO()  # let the buffered part go
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    def write(self, data: bytes) -> None:
        if self.ttfb is None:
            self.ttfb = time.monotonic() - self.started
        self.bytes_sent += len(data)
        channel = self.channel
        if self.startedWriting or not isinstance(channel, AnsweringChannel):
            super().write(data)  # type: ignore[no-untyped-call]
            return
        # The first write: the status line, headers and first bytes leave in one send.
        channel.cork()
        try:
            super().write(data)  # type: ignore[no-untyped-call]
            if self.responseHeaders._rawHeaders.get(CONTENT_LENGTH) == [b"%d" % len(data)]:
                # The whole answer: counted before it leaves, so that a scrape the client
                # sends next (to another worker too) already sees it.
                site = getattr(channel, "site", None)
                if isinstance(site, GatewaySite):
                    site.log(self)
        finally:
            channel.uncork()

    def write_chunk(self, data: bytes) -> None:
        """A stream's later blocks (``data`` not empty): one HTTP chunk built here and
        sent at once, without :meth:`write`'s layers (Twisted's two ``Request.write``,
        ``toChunk``, ``writeSequence``), whose checks the first write already passed.
        Anything else (not chunked, an encoder, finished, gone) goes through
        :meth:`write`."""
        channel = self.channel
        if (
            self.chunked
            and self.startedWriting
            and not self.finished
            and not self._disconnected
            and self._encoder is None
            and isinstance(channel, AnsweringChannel)
        ):
            size = len(data)
            self.bytes_sent += size
            self.sentLength += size
            channel._send(b"%x\r\n%s\r\n" % (size, data))
            return
        self.write(data)

    def connectionLost(self, reason: Failure) -> None:
        finished = self.finished
        site = getattr(self.channel, "site", None)  # the channel is gone after super()
        self._uncount()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]
        lost, self.on_lost = self.on_lost, None
        if lost is not None and not finished:
            lost()
        if not finished and not self.logged:
            if isinstance(site, GatewaySite):
                self.outcome = self.outcome or "client_closed"
                site.log(self)


def master_key_for(request: Request) -> str | None:
    """The master key in force for ``request``'s site (None: no key, or not our site)."""
    site = getattr(request, "site", None)
    return site.settings().master_key if isinstance(site, GatewaySite) else None


#: The ``Date`` header's value, made once a second.
_http_date = PerSecond(datetimeToString)


def _fixed_leaves(resource: Any, prefix: bytes) -> dict[bytes, tuple[Any, tuple[bytes, ...]]]:
    """Every leaf under ``resource`` reached through ``children`` alone, by full path."""
    out: dict[bytes, tuple[Any, tuple[bytes, ...]]] = {}
    for name, child in getattr(resource, "children", {}).items():
        path = prefix + b"/" + name
        if not name or len(path) > 256:
            continue
        if getattr(child, "isLeaf", False):
            out[path] = (child, tuple(path[1:].split(b"/")))
        else:
            out.update(_fixed_leaves(child, path))
    return out


class GatewaySite(Site):
    """A :class:`Site` with one structured access-log line per request."""

    requestFactory = GatewayRequest

    def protocol(self) -> Any:
        """Each connection's protocol: a :class:`GatewayChannel` (or, as chosen at start,
        Twisted's parser), inside Twisted's wrapper that would switch to HTTP/2 after TLS
        ALPN."""
        return _GenericHTTPChannelProtocol(self.channel_type())

    def __init__(
        self,
        resource: Any,
        settings: Callable[[], GeneralSettings],
        metrics: GatewayMetrics | None = None,
        **kw: Any,
    ) -> None:
        # Bodies are JSON: no form parsing, which runs Content-Type through the email
        # package on every POST (a tenth of the per-request CPU when profiled) and answers
        # a bare 400 to a JSON body labelled multipart/form-data. Twisted sets it on each
        # request from the Site, so this is where it must be said.
        kw.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, **kw)  # type: ignore[no-untyped-call]
        #: The general settings in force (they change on reload).
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.noisy = False
        #: Requests received and not yet finished (the SIGTERM drain waits on these).
        self.active_requests = 0
        #: Client connections open now (a metric).
        self.open_connections = 0
        #: Told of each change of open_connections (``--workers``: the accept balance).
        self.on_connections: Callable[[int], None] | None = None
        #: Starts each request's trace (a no-op unless tracing is configured).
        self.tracing: Tracing = NOOP_TRACING
        #: The console's request log (set by the service; None: not kept).
        self.request_log: Any = None
        #: Each connection's channel class (``GATEWAYD_SERVER_PARSER``, read once).
        self.channel_type: type[AnsweringChannel] = channel_class()

    _leaves: tuple[Any, dict[bytes, tuple[Any, tuple[bytes, ...]]]] | None = None

    def leaf_for(self, path: bytes) -> tuple[Any, tuple[bytes, ...]] | None:
        """The leaf resource at ``path`` when it is one of the tree's fixed paths, with
        its path segments; None otherwise (the tree is walked as usual)."""
        leaves = self._leaves
        if leaves is None or leaves[0] is not self.resource:
            leaves = self._leaves = (self.resource, _fixed_leaves(self.resource, b""))
        return leaves[1].get(path)

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        if channel is not None:
            self.open_connections += 1
            if self.on_connections is not None:
                self.on_connections(self.open_connections)
            lost = channel.connectionLost

            def connectionLost(reason: Failure) -> None:
                self.open_connections -= 1
                if self.on_connections is not None:
                    self.on_connections(self.open_connections)
                # This wrapper sits in the channel's own __dict__ (the protocol's, behind
                # Twisted's generic HTTP one): taken out, the channel is freed by
                # reference counting, not left in a cycle.
                vars(getattr(lost, "__self__", channel)).pop("connectionLost", None)
                lost(reason)

            channel.connectionLost = connectionLost
        return channel

    def log(self, request: Any) -> None:
        if not isinstance(request, GatewayRequest) or request.logged:
            return
        status = request.code if request.finished or request.startedWriting else 499
        self.access_line(request, status, request.bytes_sent)

    def access_line(self, request: GatewayRequest, status: int, sent: int) -> None:
        """The request's one access-log line (and its metrics)."""
        access_line(self, request, status, sent)
