"""One attempt over HTTP, with hooks for translating providers.

:class:`HTTPProvider` does the network part (pooling, timeouts, cancellation,
error mapping, stream reading). Subclasses say how to build the request and how
to translate the response, errors and stream events.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from gatewayd.config.model import Deployment
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
from gatewayd.providers.http import BodyCollector, BytesProducer, StreamReader, _describe

#: Largest JSON response accepted from an upstream (embeddings of big batches are large).
MAX_RESPONSE_BODY = 256 * 1024 * 1024
#: Error bodies are small; more is noise.
MAX_ERROR_BODY = 1024 * 1024

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status."""
    return _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def retry_after_seconds(headers: Headers, now: float | None = None) -> float | None:
    """The wait an upstream asked for: ``retry-after-ms``, or ``Retry-After`` in seconds
    or as an HTTP date. None when absent or unreadable."""
    ms = headers.getRawHeaders(b"retry-after-ms")
    if ms:
        try:
            millis = float(ms[0])
        except ValueError:
            millis = math.nan
        if math.isfinite(millis):
            return max(0.0, millis / 1000.0)
    ra = headers.getRawHeaders(b"retry-after")
    if not ra:
        return None
    value = ra[0].decode("latin-1").strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_PASS_HEADER_PREFIXES = (b"x-", b"openai-")
#: Hop and infrastructure headers that say nothing about the answer.
_DROP_HEADER_PREFIXES = (b"x-gatewayd-", b"x-forwarded-", b"x-powered-by", b"x-real-ip")


def passable_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Upstream response headers worth showing the client (request ids, rate limits)."""
    out: list[tuple[bytes, bytes]] = []
    for name, values in headers.getAllRawHeaders():
        low = name.lower()
        if low.startswith(_PASS_HEADER_PREFIXES) and not low.startswith(_DROP_HEADER_PREFIXES):
            out.extend((low, v) for v in values)
    return out


class HTTPProvider(Provider):
    """A provider reached over HTTP. Subclasses implement the translation hooks."""

    #: A stream that ends cleanly without ``data: [DONE]`` (after translation) is broken.
    stream_requires_done = False

    def __init__(self, deployment: Deployment, agent: IAgent, clock: IReactorTime) -> None:
        super().__init__(deployment)
        self._agent = agent
        self._clock = clock
        # What an upstream might echo back that must never reach a client or a log.
        secrets = [deployment.api_key, *deployment.headers.values()]
        secrets.append(deployment.extra.get("azure_ad_token"))
        self._secrets = sorted(
            {x for x in secrets if isinstance(x, str) and len(x) >= 6}, key=len, reverse=True
        )

    # -- translation hooks -----------------------------------------------------

    @abstractmethod
    def build_request(self, request: ProviderRequest) -> tuple[bytes, Headers, bytes]:
        """URL, headers and body of the upstream request."""

    def translate_response(
        self, request: ProviderRequest, body: bytes
    ) -> tuple[bytes, dict[str, Any]]:
        """The client's JSON body from the upstream's, and the parsed object (for usage).

        Pass-through checks the body is a JSON object and sends its bytes on unchanged."""
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise self._bad_response("upstream returned a success status with a non-JSON body")
        return body, parsed

    def translate_error(self, status: int, headers: Headers, body: bytes) -> UpstreamFailure:
        """An :class:`UpstreamFailure` in OpenAI's shape from an upstream error response."""
        error = _error_object(status, body)
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
        d = Deferred.fromCoroutine(self._attempt(request, limits))
        # Our own timer rather than addTimeout: cancelling an Agent request can surface as
        # ResponseNeverReceived, and a timeout must still read as a timeout (504).
        timed_out: list[bool] = []

        def expire() -> None:
            timed_out.append(True)
            d.cancel()

        timer = self._clock.callLater(limits.timeout, expire)

        def settle(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                if timed_out:
                    return Failure(TimeoutError())
                if _is_cancellation(result):
                    return Failure(CancelledError())  # the caller gave up: not a failure
            return result

        d.addBoth(settle)
        d.addErrback(self._map_failure, limits)
        d.addErrback(self._redact)
        return d

    def _redact(self, failure: Failure) -> Failure:
        """Scrub our secrets from an error, however deep an upstream echoed them."""
        if self._secrets and isinstance(failure.value, UpstreamFailure):
            failure.value.error = _scrub(failure.value.error, self._secrets)
        return failure

    async def _attempt(self, request: ProviderRequest, limits: AttemptLimits) -> UpstreamResponse:
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
        response: IResponse = await self._agent.request(b"POST", url, headers, BytesProducer(body))
        if not 200 <= response.code < 300:
            error_body = await _collect(response, MAX_ERROR_BODY)
            raise self.translate_error(response.code, response.headers, error_body)
        passed = passable_headers(response.headers)
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0].lower()
        if request.stream and b"text/event-stream" in ctype:
            reader = StreamReader(
                self._clock,
                limits.idle_timeout,
                self.stream_translator(request),
                self.deployment.id,
                # Native Messages/Responses streams end without [DONE].
                self.stream_requires_done and request.endpoint is Endpoint.CHAT,
            )
            response.deliverBody(reader)
            await reader.first_bytes
            return UpstreamResponse(response.code, passed, stream=reader)
        data = await _collect(response, MAX_RESPONSE_BODY)
        body, parsed = self.translate_response(request, data)
        usage = parsed.get("usage")
        return UpstreamResponse(
            response.code, passed, body=body, usage=usage if isinstance(usage, dict) else None
        )

    def _bad_response(self, message: str) -> UpstreamFailure:
        return UpstreamFailure(
            FailureKind.BAD_RESPONSE,
            502,
            openai_error(message, "api_error", "bad_upstream_response"),
            deployment=self.deployment.id,
        )

    def _map_failure(self, failure: Failure, limits: AttemptLimits) -> Failure:
        """Every failure leaves as an :class:`UpstreamFailure`, except a cancellation."""
        if isinstance(failure.value, UpstreamFailure):
            failure.value.deployment = self.deployment.id
            return failure
        if failure.check(TimeoutError):
            return Failure(
                UpstreamFailure(
                    FailureKind.TIMEOUT,
                    504,
                    openai_error(
                        f"upstream did not answer within {limits.timeout:g} s",
                        "timeout",
                        "upstream_timeout",
                    ),
                    deployment=self.deployment.id,
                )
            )
        if failure.check(CancelledError):
            return failure
        if failure.check(
            net_error.ConnectError,
            net_error.ConnectionLost,
            net_error.ConnectionDone,
            net_error.DNSLookupError,
            ResponseNeverReceived,
            ResponseFailed,
            OSError,
        ):
            return Failure(
                UpstreamFailure(
                    FailureKind.CONNECT,
                    502,
                    openai_error(
                        f"could not reach upstream {self.deployment.id}: {_describe(failure)}",
                        "api_connection_error",
                        "upstream_connection_error",
                    ),
                    deployment=self.deployment.id,
                )
            )
        return failure


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


def _is_cancellation(failure: Failure) -> bool:
    """A cancellation, possibly wrapped by the HTTP client in ResponseNeverReceived/Failed."""
    if failure.check(CancelledError, net_error.ConnectingCancelledError):
        return True
    reasons = getattr(failure.value, "reasons", None) or []
    return any(isinstance(r, Failure) and r.check(CancelledError) for r in reasons)


async def _collect(response: IResponse, limit: int) -> bytes:
    collector = BodyCollector(limit)
    response.deliverBody(collector)
    return await collector.done


def _error_object(status: int, body: bytes) -> dict[str, Any]:
    """OpenAI's error object from whatever an upstream sent with an error status.

    An upstream's own ``error`` object passes through whole (extra fields kept).
    """
    parsed: Any = None
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    err_type = error_type_for(status)
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        if isinstance(inner, dict):
            out = dict(inner)
            out.setdefault("message", "")
            out.setdefault("type", err_type)
            out.setdefault("param", None)
            out.setdefault("code", None)
            return out
        if isinstance(inner, str):  # Ollama, llama.cpp and others
            return openai_error(inner, err_type)
        if "detail" in parsed:  # FastAPI servers (vLLM)
            detail = parsed["detail"]
            return openai_error(detail if isinstance(detail, str) else json.dumps(detail), err_type)
        if isinstance(parsed.get("message"), str):
            return openai_error(parsed["message"], err_type)
    text = body[:300].decode("utf-8", "replace").strip()
    message = f"upstream returned HTTP {status}" + (f": {text}" if text else "")
    return openai_error(message, err_type)


def bearer_headers(key: str | None, extra: Sequence[tuple[str, str]] = ()) -> Headers:
    """JSON request headers with ``Authorization: Bearer`` when there is a key."""
    h = Headers({b"content-type": [b"application/json"]})
    if key:
        h.setRawHeaders(b"authorization", [b"Bearer " + key.encode()])
    for k, v in extra:
        h.setRawHeaders(k.encode(), [v.encode()])
    return h
