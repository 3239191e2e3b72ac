"""The provider seam: what the router hands a provider, and what comes back.

A provider turns one OpenAI-shaped request into one upstream attempt and returns
an OpenAI-shaped result. It translates four things: the request, the response,
errors (always an :class:`UpstreamFailure` in OpenAI's error shape) and, for
streams, each SSE event. Pass-through (:mod:`gatewayd.providers.openai`) is the
simplest provider; translating ones override the hooks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from gatewayd.config.model import Deployment
from gatewayd.dialects import Dialect


class Endpoint(Enum):
    """The OpenAI API operations the gateway routes. Values are URL path suffixes."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    #: Native pass-through of the other dialects (see :mod:`gatewayd.providers.dialect`).
    RESPONSES = "responses"
    MESSAGES = "messages"
    COUNT_TOKENS = "messages/count_tokens"
    #: The rest of the API surface (:mod:`gatewayd.web.media`): JSON or multipart in.
    SPEECH = "audio/speech"
    TRANSCRIPTIONS = "audio/transcriptions"
    TRANSLATIONS = "audio/translations"
    IMAGES = "images/generations"
    IMAGE_EDITS = "images/edits"
    IMAGE_VARIATIONS = "images/variations"
    MODERATIONS = "moderations"
    RERANK = "rerank"


class FailureKind(Enum):
    """Why an upstream attempt failed: decides retries and the client's status."""

    HTTP = "http"  # the upstream answered with an error status
    CONNECT = "connect"  # refused, reset, DNS: no usable response
    TIMEOUT = "timeout"  # no (complete) response in time
    BAD_RESPONSE = "bad_response"  # a 2xx that is not what the protocol promises


def openai_error(
    message: str, type: str = "api_error", code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI error object: the value of ``{"error": ...}``."""
    return {"message": message, "type": type, "param": param, "code": code}


class UpstreamFailure(Exception):
    """One failed upstream attempt, already in OpenAI's error shape.

    ``status`` is what the client gets if this is the last failure: the upstream's
    own status for HTTP errors, 502 for connection failures and bad responses,
    504 for timeouts.
    """

    def __init__(
        self,
        kind: FailureKind,
        status: int,
        error: dict[str, Any],
        *,
        retry_after: float | None = None,
        deployment: str = "",
    ) -> None:
        super().__init__(error.get("message", ""))
        self.kind = kind
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.deployment = deployment

    @property
    def message(self) -> str:
        return str(self.error.get("message") or "")

    def __repr__(self) -> str:
        return f"UpstreamFailure({self.kind.value}, {self.status}, {self.message!r})"


@dataclass(frozen=True)
class ProviderRequest:
    """A request as the client sent it (``model`` is the alias).

    ``dialect`` is the client's: a Messages or Responses body is passed through to a
    deployment that speaks it natively, else translated to chat per attempt
    (:func:`gatewayd.providers.dialect.send_in_dialect`)."""

    endpoint: Endpoint
    body: dict[str, Any]
    stream: bool = False
    #: Extra headers for every attempt (``x-request-id``, ``traceparent``): never secrets.
    headers: tuple[tuple[str, str], ...] = ()
    #: The request's trace (:class:`gatewayd.tracing.RequestTrace`); a no-op when off.
    trace: Any = None
    dialect: Dialect = Dialect.CHAT
    #: ``general_settings.drop_params``: drop what cannot be translated instead of a 400.
    drop_params: bool = False
    #: Client headers a native upstream should see (``anthropic-beta`` ...).
    forward_headers: tuple[tuple[str, str], ...] = ()
    #: Only this deployment may answer (a native upstream's ``previous_response_id``).
    pin: str | None = None
    #: A multipart upload (transcriptions, image edits): ``body`` holds its plain fields.
    upload: Upload | None = None


class Upload(Protocol):
    """A client's multipart upload, spooled (:mod:`gatewayd.web.upload`): sent again
    whole by every attempt."""

    def body(self, model: str) -> bytes:
        """The multipart body for an upstream, with ``model`` as the model field."""

    def content_type(self) -> bytes:
        """``multipart/form-data; boundary=...``"""

    def first_file(self) -> bytes:
        """The first file's bytes."""


class StreamSink(Protocol):
    """Where a started stream delivers its events (the relay to the client)."""

    def event(self, data: bytes) -> None:
        """One or more complete SSE events, each ending in a blank line."""

    def end(self, failure: UpstreamFailure | None) -> None:
        """The stream is over: cleanly (None) or broken after it started."""


class EventStream(ABC):
    """An upstream stream that has produced its first bytes and awaits a sink.

    Flow control goes back to the source: :meth:`pause` stops reading from the
    upstream, :meth:`resume` goes on, :meth:`cancel` drops the upstream connection.
    """

    @abstractmethod
    def start(self, sink: StreamSink) -> None:
        """Deliver what has arrived so far, then every later event, to ``sink``."""

    @abstractmethod
    def pause(self) -> None: ...

    @abstractmethod
    def resume(self) -> None: ...

    @abstractmethod
    def cancel(self) -> None: ...


@dataclass
class UpstreamResponse:
    """A successful attempt: a complete JSON body, or a started stream."""

    status: int
    #: Upstream headers worth passing on to the client (lower-case names).
    headers: Sequence[tuple[bytes, bytes]] = ()
    body: bytes | None = None
    stream: EventStream | None = None
    #: The OpenAI ``usage`` object of a JSON answer, when it had one.
    usage: dict[str, Any] | None = None
    #: The dialect of ``body``/``stream``: the client's (native) or chat (to translate back).
    dialect: Dialect = Dialect.CHAT


@dataclass(frozen=True)
class AttemptLimits:
    """Time limits for one attempt, in seconds."""

    #: The whole attempt for a JSON response; up to the first byte for a stream.
    timeout: float
    #: Longest gap between stream chunks after the first.
    idle_timeout: float


class Provider(ABC):
    """Sends requests for one deployment."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment

    @abstractmethod
    def send(self, request: ProviderRequest, limits: AttemptLimits) -> Deferred[UpstreamResponse]:
        """Make one upstream attempt.

        Fires with an :class:`UpstreamResponse` (status 2xx; for a stream, once its
        first bytes have arrived) or fails with :class:`UpstreamFailure`. Cancelling
        the Deferred aborts the attempt and closes its upstream connection.
        """

    def close(self) -> Deferred[None] | None:
        """Release resources when a reload removes this deployment."""
        return None
