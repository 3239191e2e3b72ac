"""One attempt over HTTP, with hooks for translating providers.

:class:`HTTPProvider` does the network part (pooling, timeouts, cancellation,
error mapping, stream reading). Subclasses say how to build the request and how
to translate the response, errors and stream events.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers, _nameEncoder
from twisted.web.iweb import IAgent, IResponse

from gatewayd.config.model import Deployment
from gatewayd.observability.log import get_logger, is_verbose
from gatewayd.providers.attempt_failures import attempt_failure, is_cancellation
from gatewayd.providers.base import (
    AttemptLimits,
    Endpoint,
    FailureKind,
    Provider,
    ProviderRequest,
    UpstreamFailure,
    UpstreamResponse,
    openai_error,
)
from gatewayd.providers.media import MEDIA_ENDPOINTS, media_answer
from gatewayd.providers.replies import error_object, passable_headers

# Re-exported: translating providers import these from here.
from gatewayd.providers.replies import error_type_for as error_type_for
from gatewayd.providers.replies import retry_after_seconds as retry_after_seconds
from gatewayd.providers.request_headers import ACCEPT_ENCODING
from gatewayd.upstream.encoding import Decoder, DecodingError, decoder_for
from gatewayd.upstream.http import BodyCollector, BytesProducer
from gatewayd.upstream.redact import Redactor, loggable_url, split_credentials
from gatewayd.upstream.stream import StreamReader
from gatewayd.upstream.wirejson import loads_strict, normalise_error

log = get_logger(__name__)

#: Largest JSON response accepted from an upstream (embeddings of big batches are large).
MAX_RESPONSE_BODY = 256 * 1024 * 1024
#: Error bodies are small; more is noise.
MAX_ERROR_BODY = 1024 * 1024


class HTTPProvider(Provider):
    """A provider reached over HTTP. Subclasses implement the translation hooks."""

    #: A stream that ends cleanly without ``data: [DONE]`` (after translation) is broken.
    stream_requires_done = False

    def __init__(self, deployment: Deployment, agent: IAgent, clock: IReactorTime) -> None:
        super().__init__(deployment)
        self._agent = agent
        self._clock = clock
        # What an upstream might echo back that must never reach a client or a log.
        _, url_credentials = split_credentials(deployment.api_base or "")
        secrets = [deployment.api_key, *deployment.headers.values(), *url_credentials]
        secrets.append(deployment.extra.get("azure_ad_token"))
        self._redactor = Redactor(secrets)
        #: URLs built by build_request, without credentials (bytes to send, text to log).
        self._clean_urls: dict[bytes, tuple[bytes, str]] = {}

    # -- translation hooks -----------------------------------------------------

    @abstractmethod
    def build_request(self, request: ProviderRequest) -> tuple[bytes, Headers, bytes]:
        """URL, headers and body of the upstream request."""

    def translate_response(
        self, request: ProviderRequest, body: bytes
    ) -> tuple[bytes, dict[str, Any]]:
        """The client's JSON body from the upstream's, and the parsed object (for usage).

        Pass-through checks the body is a JSON object (strict JSON: no NaN or Infinity)
        and sends its bytes on unchanged."""
        try:
            parsed = loads_strict(body)
        except ValueError as e:
            raise self._bad_response(
                f"upstream returned a success status with a body that is not JSON: {e}"
            ) from None
        if not isinstance(parsed, dict):
            raise self._bad_response("upstream returned a success status with a non-JSON body")
        return body, parsed

    def translate_error(self, status: int, headers: Headers, body: bytes) -> UpstreamFailure:
        """An :class:`UpstreamFailure` in OpenAI's shape from an upstream error response."""
        error = error_object(status, body)
        return UpstreamFailure(
            FailureKind.HTTP,
            status,
            error,
            retry_after=retry_after_seconds(headers),
            deployment=self.deployment.id,
        )

    def stream_translator(self, request: ProviderRequest) -> Callable[[bytes], list[bytes]] | None:
        """Maps one upstream SSE event to the client's events; None passes them through."""
        return None

    # -- the attempt -----------------------------------------------------------

    def send(self, request: ProviderRequest, limits: AttemptLimits) -> Deferred[UpstreamResponse]:
        started = self._clock.seconds()
        sent: list[str] = []  # the URL, once built
        d = self._attempt(request, limits, sent)
        # Our own timer rather than addTimeout: cancelling an Agent request can surface as
        # ResponseNeverReceived, and a timeout must still read as a timeout (504).
        timed_out: list[bool] = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self._clock.callLater(limits.timeout, expire)
        verbose = is_verbose()

        # One callback for the whole outcome (it was four links of the chain): the timer
        # stopped, a failure mapped to an UpstreamFailure and scrubbed, the -v trace.
        def settle(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                if timed_out:
                    result = Failure(TimeoutError())
                elif is_cancellation(result):
                    return Failure(CancelledError())  # the caller gave up: not a failure
                result = self._redact(attempt_failure(result, self.deployment.id, limits.timeout))
            if verbose:
                self._trace(result, sent, started)
            return result

        d.addBoth(settle)
        return d

    def _trace(self, result: Any, sent: list[str], started: float) -> None:
        """-v only: the URL (no credentials, no query secrets), status and time."""
        if isinstance(result, Failure) and not isinstance(result.value, UpstreamFailure):
            return  # a cancellation
        failure: UpstreamFailure | None = None
        if isinstance(result, Failure):
            assert isinstance(result.value, UpstreamFailure)
            failure = result.value
        log.debug(
            "upstream attempt {deployment}: POST {url} -> {status} {outcome} in {ms} ms",
            deployment=self.deployment.id,
            url=_LazyURL(sent),
            status=failure.status if failure is not None else result.status,
            outcome=failure.kind.value if failure is not None else "ok",
            ms=_LazyMillis(self._clock.seconds() - started),
        )

    def _redact(self, failure: Failure) -> Failure:
        """Scrub our secrets from an error, however deep an upstream echoed them."""
        if self._redactor and isinstance(failure.value, UpstreamFailure):
            try:
                failure.value.error = self._redactor.value(failure.value.error)
            except RecursionError:
                failure.value.error = openai_error("upstream error (too deeply nested to show)")
        return failure

    def _attempt(
        self, request: ProviderRequest, limits: AttemptLimits, sent: list[str]
    ) -> Deferred[UpstreamResponse]:
        """Fires with the :class:`UpstreamResponse`. Callbacks, not a coroutine: a
        coroutine's driver costs more than the two steps it would save writing."""
        try:
            url, headers, body = self._prepare(request, sent)
            method = request.method.encode("ascii")
            producer = BytesProducer(body) if method == b"POST" else None
            d = self._agent.request(method, url, headers, producer)
        except Exception:
            return fail()
        return d.addCallback(self._answered, request, limits)

    def _prepare(self, request: ProviderRequest, sent: list[str]) -> tuple[bytes, Headers, bytes]:
        try:
            url, headers, body = self.build_request(request)
        except UpstreamFailure:
            raise
        except (KeyError, TypeError, AttributeError, ValueError, UnicodeError) as e:
            # A request field of a shape the translation cannot take: the client's mistake.
            raise UpstreamFailure(
                FailureKind.HTTP,
                400,
                openai_error(
                    f"this request cannot be sent to {self.deployment.provider.prefix}: "
                    f"{type(e).__name__}: {e}",
                    "invalid_request_error",
                    "invalid_request",
                ),
            ) from None
        raw = headers._rawHeaders  # gatewayd's own names and values: no re-checking
        for name, value in request.headers:  # a deployment's own `headers:` win
            key = _nameEncoder.encode(name)  # cached by Twisted, per name
            if key not in raw:
                raw[key] = [value.encode("latin-1")]
        # Credentials in api_base are never sent in the URL (nor logged, nor shown).
        # A deployment's URL is the same every time: split once (urlsplit per request).
        known = self._clean_urls.get(url)
        if known is None:
            clean, _ = split_credentials(url.decode("ascii"))
            if len(self._clean_urls) >= 64:
                self._clean_urls.clear()
            known = self._clean_urls[url] = (clean.encode("ascii"), clean)
        sent.append(known[1])
        if ACCEPT_ENCODING not in raw:
            raw[ACCEPT_ENCODING] = [b"identity"]
        return known[0], headers, body

    def _answered(
        self, response: IResponse, request: ProviderRequest, limits: AttemptLimits
    ) -> UpstreamResponse | Deferred[UpstreamResponse]:
        """The response's status and headers are in: its body read, or its stream begun."""
        try:
            decoder = decoder_for(response.headers)
        except DecodingError as e:
            response.deliverBody(_Discard())
            if 200 <= response.code < 300:
                raise self._bad_response(str(e)) from None
            raise self._generic_error(response.code, response.headers, str(e).encode()) from None
        if not 200 <= response.code < 300 and not 400 <= response.code < 600:
            # A redirect (never followed) or a status outside HTTP's: not an answer the
            # client can use, and its status must not reach the client as is.
            response.deliverBody(_Discard())
            where = (response.headers.getRawHeaders(b"location") or [b""])[0]
            hint = f" to {loggable_url(where.decode('latin-1'))}" if where else ""
            raise self._bad_response(
                f"upstream answered HTTP {response.code}{hint} (redirects are not followed: "
                "check api_base)"
                if 300 <= response.code < 400
                else f"upstream answered with status {response.code}"
            )
        if not 200 <= response.code < 300:
            status, headers = response.code, response.headers

            def refused(error_body: bytes) -> UpstreamResponse:
                raise self._read_error(status, headers, error_body)

            return _collect(response, MAX_ERROR_BODY, decoder).addCallback(refused)
        passed = passable_headers(response.headers)
        if request.endpoint in MEDIA_ENDPOINTS:  # audio bytes, a text transcript: not JSON
            media = media_answer(
                request,
                response,
                passed,
                self._clock,
                limits.idle_timeout,
                self.deployment.id,
                decoder,
                lambda: _collect(response, MAX_RESPONSE_BODY, decoder),
            )
            if media is not None:
                return media
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0].lower()
        if request.stream and b"text/event-stream" in ctype:
            reader = StreamReader(
                self._clock,
                limits.idle_timeout,
                self.stream_translator(request),
                self.deployment.id,
                # Native Messages/Responses streams end without [DONE].
                self.stream_requires_done and request.endpoint is Endpoint.CHAT,
                decoder,
                self._redactor,
            )
            response.deliverBody(reader)
            code = response.code
            return reader.first_bytes.addCallback(
                lambda _: UpstreamResponse(code, passed, stream=reader)
            )
        code = response.code
        return _collect(response, MAX_RESPONSE_BODY, decoder).addCallback(
            self._read_body, request, code, passed
        )

    def _read_body(
        self, data: bytes, request: ProviderRequest, code: int, passed: Any
    ) -> UpstreamResponse:
        if b"NaN" in data or b"Infinity" in data:
            # Translating providers parse leniently; no NaN/Infinity gets past here (the
            # substring test keeps the common case to one parse).
            try:
                loads_strict(data)
            except ValueError as e:
                raise self._bad_response(
                    f"upstream returned a success status with a body that is not JSON: {e}"
                ) from None
        try:
            body, parsed = self.translate_response(request, data)
            if body is not data and (b"NaN" in body or b"Infinity" in body):
                loads_strict(body)  # a translation must not make NaN/Infinity either
        except UpstreamFailure:
            raise
        except Exception as e:  # a body of a shape the translation cannot take
            raise self._bad_response(
                f"upstream returned a success body the gateway cannot read ({type(e).__name__})"
            ) from None
        usage = parsed.get("usage")
        return UpstreamResponse(
            code, passed, body=body, usage=usage if isinstance(usage, dict) else None
        )

    def _read_error(self, status: int, headers: Headers, body: bytes) -> UpstreamFailure:
        """The failure for an error response: secrets scrubbed from the raw bytes before
        anything is parsed or cut, fields in OpenAI's schema, never an exception."""
        body = self._redactor.data(body)
        try:
            failure = self.translate_error(status, headers, body)
        except Exception:  # a translating provider that cannot read this body
            failure = self._generic_error(status, headers, body)
        try:
            failure.error = normalise_error(failure.error, error_type_for(status))
        except (ValueError, RecursionError):
            failure.error = openai_error(failure.message, error_type_for(status))
        return failure

    def _generic_error(self, status: int, headers: Headers, body: bytes) -> UpstreamFailure:
        return HTTPProvider.translate_error(self, status, headers, body)

    def _bad_response(self, message: str) -> UpstreamFailure:
        return UpstreamFailure(
            FailureKind.BAD_RESPONSE,
            502,
            openai_error(message, "api_error", "bad_upstream_response"),
            deployment=self.deployment.id,
        )


class _LazyURL:
    """The attempt's URL for a debug line, made loggable only if the line is written."""

    def __init__(self, sent: list[str]) -> None:
        self._sent = sent

    def __str__(self) -> str:
        return loggable_url(self._sent[0]) if self._sent else "(not built)"


class _LazyMillis:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    def __str__(self) -> str:
        return f"{self._seconds * 1000:.1f}"


class _Discard(Protocol):
    """Reads and drops a body the gateway will not use (so the connection is freed)."""


def _collect(response: IResponse, limit: int, decoder: Decoder | None = None) -> Deferred[bytes]:
    """Fires with the (decoded) body, at most ``limit`` bytes."""
    collector = BodyCollector(limit, decoder)
    response.deliverBody(collector)
    return collector.done
