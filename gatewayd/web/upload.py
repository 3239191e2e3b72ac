"""Multipart uploads (``/audio/transcriptions``, ``/audio/translations``,
``/images/edits``, ``/images/variations``), parsed as they stream in.

The body never sits whole in memory: :class:`UploadSpool` feeds each read to the
``multipart`` package's push parser and keeps each part, a file in a
:class:`~tempfile.SpooledTemporaryFile` (memory up to :data:`IN_MEMORY`, then disk),
so that every attempt (a retry, a fallback) can send it again. Past
``general_settings.max_audio_upload_bytes``, declared (``Content-Length``) or
received, the request is refused with 413 at once, before the rest is read.

Upstream, the parts go in the client's order with their own headers and the
client's boundary; only ``model``'s value is replaced (by the deployment's model).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import IO, Any

from multipart import MultipartError, PushMultipartParser, parse_options_header

from gatewayd.observability import request_ids as reqid
from gatewayd.observability.request_ids import request_id
from gatewayd.providers.base import Endpoint, openai_error
from gatewayd.web.auth import authenticate
from gatewayd.web.errors import error_json

#: Bytes of one file kept in memory before it goes to a temporary file.
IN_MEMORY = 1024 * 1024
#: Largest plain (non-file) field: they are parameters, not data.
MAX_FIELD = 64 * 1024
#: Most parts in one upload (several images for an edit, a mask, parameters).
MAX_PARTS = 256
#: Seconds the rest of a refused upload is read (and dropped) before the connection goes.
LINGER = 10.0

#: The upload endpoints by path suffix.
UPLOAD_PATHS: dict[bytes, Endpoint] = {
    b"audio/transcriptions": Endpoint.TRANSCRIPTIONS,
    b"audio/translations": Endpoint.TRANSLATIONS,
    b"images/edits": Endpoint.IMAGE_EDITS,
    b"images/variations": Endpoint.IMAGE_VARIATIONS,
    b"files": Endpoint.FILES,
}


def upload_endpoint(target: bytes) -> Endpoint | None:
    """The upload endpoint a request target names (``/v1/audio/transcriptions``,
    ``/audio/transcriptions``, a trailing slash or a query allowed), else None."""
    path = target.split(b"?", 1)[0].rstrip(b"/")
    if path.startswith(b"/v1/"):
        path = path[4:]
    elif path.startswith(b"/"):
        path = path[1:]
    return UPLOAD_PATHS.get(path)


class UploadError(ValueError):
    """The upload is not usable: the message of a 400."""


@dataclass
class Part:
    """One part of the form: its headers as sent, its name, and its bytes."""

    headers: list[tuple[str, str]]
    name: str
    filename: str | None
    content_type: str | None
    data: IO[bytes] = field(default_factory=lambda: tempfile.SpooledTemporaryFile(IN_MEMORY))
    size: int = 0

    def read(self) -> bytes:
        self.data.seek(0)
        return self.data.read()

    def text(self) -> str:
        return self.read().decode("utf-8", "replace")


class UploadSpool:
    """A multipart body as it arrives: parts parsed and kept, size bounded.

    ``too_large`` is set once ``limit`` bytes are passed (the rest is dropped);
    ``error`` holds the first parse error (reported as a 400 once the body is in)."""

    def __init__(self, content_type: str | None, limit: int) -> None:
        self.limit = limit
        #: The setting that set ``limit`` (named in the 413).
        self.limit_key = "max_audio_upload_bytes"
        self.received = 0
        self.too_large = False
        self.refused = False  # a 413 went out: nothing more to do with this request
        #: The timer that ends reading a refused body (see :func:`refuse`).
        self.linger: Any = None
        #: The caller presented a good key: it may be told 413 before the body ends.
        self.authorized = True
        self.error: str | None = None
        self.parts: list[Part] = []
        self._current: Part | None = None
        self.boundary = b""
        self._parser: PushMultipartParser | None = None
        kind, options = parse_options_header(content_type or "")
        if kind != "multipart/form-data":
            self.error = (
                "this endpoint takes multipart/form-data (a file upload), "
                f"not {kind or 'a body without a Content-Type'}"
            )
            return
        boundary = options.get("boundary")
        if not boundary:
            self.error = "multipart/form-data without a boundary"
            return
        self.boundary = boundary.encode("latin-1")
        try:
            self._parser = PushMultipartParser(
                boundary, max_header_count=16, max_segment_count=MAX_PARTS
            )
        except (MultipartError, ValueError) as e:  # a boundary the parser refuses
            self.error = f"the multipart boundary cannot be used: {e}"

    def feed(self, data: bytes) -> None:
        """One read of the body: counted, parsed, its parts' bytes kept."""
        if not data:  # the parser would read an empty chunk as the end of the body
            return
        self.received += len(data)
        if self.received > self.limit:
            self.too_large = True
            self.close()
            return
        if self._parser is None or self.error is not None:
            return
        try:
            for event in self._parser.parse(data):
                self._event(event)
        except (MultipartError, ValueError) as e:  # UploadError is a ValueError
            self.error = f"the multipart body cannot be read: {e}"

    def take(self, request: Any, data: bytes) -> None:
        """One read of ``request``'s body: fed, and a 413 sent once it is too large."""
        if self.refused:
            return
        self.feed(data)
        if self.too_large and self.authorized:  # else dropped, and 401 at the end
            refuse(request, self)

    def _event(self, event: Any) -> None:
        if event is None:  # the end of a part
            self._current = None
            return
        if isinstance(event, bytes | bytearray):
            part = self._current
            assert part is not None
            part.size += len(event)
            if part.filename is None and part.size > MAX_FIELD:
                raise UploadError(f"the field {part.name!r} is longer than {MAX_FIELD} bytes")
            part.data.write(event)
            return
        part = Part(list(event.headerlist), event.name or "", event.filename, event.content_type)
        self.parts.append(part)
        self._current = part

    def finish(self) -> None:
        """The whole body is in: a form cut short is an error."""
        if self._parser is None or self.error is not None or self.too_large:
            return
        try:
            for event in self._parser.parse(b""):
                self._event(event)
            self._parser.close()
        except (MultipartError, ValueError) as e:
            self.error = f"the multipart body cannot be read: {e}"

    def close(self) -> None:
        """Let the spooled parts go (temporary files included); no more lingering."""
        if self.linger is not None and self.linger.active():
            self.linger.cancel()
        for part in self.parts:
            part.data.close()
        self.parts = []
        self._current = None

    # -- what the gateway reads of it --------------------------------------------

    def fields(self) -> dict[str, Any]:
        """The plain fields by name (a repeated name, like ``timestamp_granularities[]``,
        as a list); files are left out."""
        out: dict[str, Any] = {}
        for part in self.parts:
            if part.filename is not None:
                continue
            value = part.text()
            if part.name in out:
                was = out[part.name]
                out[part.name] = [*was, value] if isinstance(was, list) else [was, value]
            else:
                out[part.name] = value
        return out

    def files(self) -> list[Part]:
        return [p for p in self.parts if p.filename is not None]

    def body(self, model: str | None) -> bytes:
        """The form for an upstream: the parts in order with their headers, the client's
        boundary, ``model``'s value replaced. Built per attempt (from the spool)."""
        b = self.boundary
        out: list[bytes] = []
        for part in self.parts:
            is_model = part.name == "model" and part.filename is None
            if is_model and model is None:
                continue  # the gateway's routing field, not the upstream's
            out.append(b"--" + b + b"\r\n")
            for name, value in part.headers:
                out.append(f"{name}: {value}\r\n".encode())
            out.append(b"\r\n")
            if is_model and model is not None:
                out.append(model.encode())
            else:
                out.append(part.read())
            out.append(b"\r\n")
        out.append(b"--" + b + b"--\r\n")
        return b"".join(out)

    def content_type(self) -> bytes:
        return b"multipart/form-data; boundary=" + self.boundary

    def first_file(self) -> bytes:
        """The bytes of the first file (the mock reads an audio file's length)."""
        files = self.files()
        return files[0].read() if files else b""

    def first_filename(self) -> str:
        files = self.files()
        return (files[0].filename or "") if files else ""


def too_large_message(spool: UploadSpool) -> str:
    return f"upload larger than {spool.limit_key} ({spool.limit} bytes)"


def start_upload(request: Any, length: int | None) -> UploadSpool | None:
    """At the end of a request's headers (``gotLength``): an :class:`UploadSpool` for a
    POST to an upload endpoint, else None. A declared length past the limit is refused
    with 413 now, before the body is read."""
    channel = request.channel
    target = getattr(channel, "_url", None) or getattr(channel, "_path", None) or b""
    method = getattr(channel, "_method", None) or getattr(channel, "_command", None)
    if method != b"POST":
        return None
    endpoint = upload_endpoint(target)
    if endpoint is None:
        return None
    site = getattr(channel, "site", None)
    settings = getattr(site, "settings", None)
    limit = settings().max_audio_upload_bytes if settings is not None else 25 * 1024 * 1024
    key = "max_audio_upload_bytes"
    if endpoint is Endpoint.FILES:  # batch input files: the general body limit
        limit, key = request.max_body_size, "max_request_body_size"
    ctype = request.requestHeaders.getRawHeaders(b"content-type")
    spool = UploadSpool(ctype[0].decode("latin-1") if ctype else None, limit)
    spool.limit_key = key
    gateway = getattr(getattr(site, "resource", None), "gateway", None)
    if gateway is not None:  # a caller without a key learns nothing of the path early
        spool.authorized = authenticate(request, gateway.router.table.config) is not None
    if length is not None and length > limit:
        spool.too_large = True
        if spool.authorized:
            refuse(request, spool)
    return spool


def refuse(request: Any, spool: UploadSpool) -> None:
    """Answer 413 now, before the rest of the body is read, and close our side.

    The rest of the body is read and dropped (nothing is kept) until it ends or for
    :data:`LINGER` seconds: a client that sends its whole body before reading (httpx,
    the SDKs) then reads the 413 instead of a reset connection."""
    if spool.refused:
        return
    spool.refused = True
    spool.close()
    channel = request.channel
    transport = getattr(channel, "transport", None)
    if transport is None:
        return
    body = error_json(
        openai_error(too_large_message(spool), "invalid_request_error", "request_too_large")
    )
    rid = request_id(request.getHeader(reqid.HEADER))
    request.request_id = rid
    transport.write(
        b"HTTP/1.1 413 Request Entity Too Large\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nx-request-id: %s\r\nconnection: close\r\n\r\n%s"
        % (len(body), rid.encode("ascii"), body)
    )
    half_close = getattr(transport, "loseWriteConnection", None)
    if half_close is None:
        channel.loseConnection()
    else:
        half_close()  # the client sees the answer end; we go on reading (and dropping)
        later = getattr(channel, "callLater", None)
        if later is not None:
            spool.linger = later(LINGER, transport.abortConnection)
    site = getattr(channel, "site", None)
    access_line = getattr(site, "access_line", None)
    if access_line is not None:
        request.method = getattr(channel, "_method", None) or b"POST"
        request.uri = getattr(channel, "_url", None) or b"-"
        request.outcome = "upload_too_large"
        access_line(request, 413, len(body))


def done_refusing(request: Any, spool: UploadSpool) -> None:
    """The refused body has ended: close the connection now."""
    spool.close()
    request.channel.loseConnection()
