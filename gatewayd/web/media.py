"""The endpoints past chat: ``/audio/speech``, ``/images/generations``,
``/moderations`` and ``/rerank`` (also ``/v2/rerank``) with a JSON body, and
``/audio/transcriptions``, ``/audio/translations``, ``/images/edits`` and
``/images/variations`` with a multipart one (:mod:`gatewayd.web.upload`), routed by the
alias in ``model`` through the same admission, limits, retries and fallbacks as chat.

A request for an endpoint no deployment of the alias serves (``params.api_endpoints``)
is a 400 naming both. Answers that are not JSON keep the upstream's ``Content-Type``:
speech audio streams through a :class:`~gatewayd.web.byterelay.ByteRelay`, text
transcripts are written whole.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import NOT_DONE_YET

from gatewayd.limits import Spent
from gatewayd.providers.base import Endpoint
from gatewayd.providers.capabilities import endpoint_name
from gatewayd.providers.media import is_file_content
from gatewayd.routing import RouteResult
from gatewayd.web.byterelay import ByteRelay
from gatewayd.web.exchange import Exchange, Gateway, upstream_call
from gatewayd.web.headers import CONTENT_LENGTH, CONTENT_TYPE
from gatewayd.web.request import GatewayRequest
from gatewayd.web.resource_kinds import RoutedResource
from gatewayd.web.upload import too_large_message


class MediaExchange(Exchange):
    """An :class:`Exchange` whose answer may be bytes (speech) or text (a transcript)
    with the upstream's ``Content-Type``; JSON and SSE answers go as in chat."""

    def _routed(self, result: RouteResult) -> None:
        response = result.response
        binary = response.stream is not None and (
            self.call.endpoint is Endpoint.SPEECH or is_file_content(self.call)
        )
        if self.gone or self.committed or not (binary or response.stream is None):
            super()._routed(result)
            return
        self._stop_heartbeat()
        self._describe(result)  # the upstream's content-type among the headers
        r = self.request
        r.setResponseCode(response.status)
        if not r.responseHeaders.hasHeader(b"content-type"):
            r.put_header(CONTENT_TYPE, b"application/json")
        if response.stream is None:
            body = self.rewrite(response.body or b"", result)
            spent = Spent.from_usage(response.usage)
            if spent is not None:
                self.metrics.count_usage(
                    self.alias, result.deployment, spent.prompt, spent.completion
                )
            if result.attempts == 1:
                r.upstream_seconds = result.upstream_seconds
            r.put_header(CONTENT_LENGTH, b"%d" % len(body))
            r.write(body)
            r.finish()
            return
        ByteRelay(
            r, response.stream, result.finish, self.metrics, self.alias, self.ctx.taps
        ).begin()

    def rewrite(self, body: bytes, result: RouteResult) -> bytes:
        """The body to send the client (objects: their ids handed out signed)."""
        return body


class MediaResource(RoutedResource):
    """POST of a JSON body naming an alias, answered by whatever the upstream sends."""

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        super().__init__(gateway)
        self.endpoint = endpoint

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        parsed = self.parse(request, self.endpoint.value)
        if isinstance(parsed, bytes):
            return parsed
        body, stream = parsed
        assert request.alias is not None
        request.endpoint = endpoint_name(self.endpoint)
        # Speech streams its bytes whatever the body says (stream_format is the upstream's
        # business); of the rest only image generation streams (SSE partial images).
        stream = stream and self.endpoint is Endpoint.IMAGES
        call = upstream_call(request, self.endpoint, body, stream, drop_params=False)
        MediaExchange(self.gateway, request, request.alias, call)
        return NOT_DONE_YET


class UploadResource(RoutedResource):
    """POST of a multipart form (:mod:`gatewayd.web.upload`): ``model`` read from its
    field, the parts resent whole by every attempt."""

    def __init__(self, gateway: Gateway, endpoint: Endpoint) -> None:
        super().__init__(gateway)
        self.endpoint = endpoint

    def render_POST(self, request: GatewayRequest) -> bytes | int:
        spool = request.upload
        if spool is None:
            return self.error(request, 400, "this endpoint takes multipart/form-data")
        request.notifyFinish().addBoth(lambda _: spool.close())
        spool.finish()
        if spool.too_large:
            return self.error(request, 413, too_large_message(spool), code="request_too_large")
        if spool.error is not None:
            return self.error(request, 400, spool.error, code="invalid_multipart")
        fields = spool.fields()
        alias = fields.get("model")
        if not isinstance(alias, str) or not alias:
            return self.error(
                request,
                400,
                "you must provide a model parameter",
                code="missing_model",
                param="model",
            )
        refused = self.admit_alias(request, alias) or self.refuse_unserved(
            request, alias, self.endpoint
        )
        if refused is not None:
            return refused
        if not spool.files():
            return self.error(
                request,
                400,
                "the form has no file: upload one as a file part",
                code="missing_file",
                param="file" if self.endpoint in _AUDIO else "image",
            )
        request.endpoint = endpoint_name(self.endpoint)
        # Transcripts (SSE transcript events) and image edits (partial images) stream.
        stream = str(fields.get("stream", "")).lower() == "true"
        call = upstream_call(request, self.endpoint, fields, stream, upload=spool)
        MediaExchange(self.gateway, request, alias, call)
        return NOT_DONE_YET


_AUDIO = (Endpoint.TRANSCRIPTIONS, Endpoint.TRANSLATIONS)


def add_media_routes(api: Any, gateway: Gateway) -> None:
    """Put this module's endpoints under ``api`` (the ``/v1`` node)."""
    from gatewayd.web.resource_kinds import JSONResource

    audio = JSONResource()
    audio.putChild(b"speech", MediaResource(gateway, Endpoint.SPEECH))
    audio.putChild(b"transcriptions", UploadResource(gateway, Endpoint.TRANSCRIPTIONS))
    audio.putChild(b"translations", UploadResource(gateway, Endpoint.TRANSLATIONS))
    images = JSONResource()
    images.putChild(b"generations", MediaResource(gateway, Endpoint.IMAGES))
    images.putChild(b"edits", UploadResource(gateway, Endpoint.IMAGE_EDITS))
    images.putChild(b"variations", UploadResource(gateway, Endpoint.IMAGE_VARIATIONS))
    api.putChild(b"audio", audio)
    api.putChild(b"images", images)
    api.putChild(b"moderations", MediaResource(gateway, Endpoint.MODERATIONS))
    api.putChild(b"rerank", MediaResource(gateway, Endpoint.RERANK))
