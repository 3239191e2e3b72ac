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
from gatewayd.upstream.outcomes import EventStream as EventStream
from gatewayd.upstream.outcomes import FailureKind as FailureKind
from gatewayd.upstream.outcomes import StreamSink as StreamSink
from gatewayd.upstream.outcomes import UpstreamFailure as UpstreamFailure
from gatewayd.upstream.outcomes import openai_error as openai_error


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
    #: Objects held by one deployment (:mod:`gatewayd.web.objects`): the path is
    #: ``ProviderRequest.path`` (``files/{id}/content``...), the method its own.
    FILES = "files"
    BATCHES = "batches"


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
    #: False: never send a hedged copy (the client's key is at its limit).
    hedge: bool = True
    #: A multipart upload (transcriptions, image edits): ``body`` holds its plain fields.
    upload: Upload | None = None
    #: The HTTP method upstream (files and batches: GET, DELETE as well).
    method: str = "POST"
    #: The path under the API base when not the endpoint's own (``files/{id}/content``,
    #: a list's query string included).
    path: str | None = None


class Upload(Protocol):
    """A client's multipart upload, spooled (:mod:`gatewayd.web.upload`): sent again
    whole by every attempt."""

    def body(self, model: str | None) -> bytes:
        """The multipart body for an upstream, with ``model`` as the model field (None:
        without it)."""

    def content_type(self) -> bytes:
        """``multipart/form-data; boundary=...``"""

    def first_file(self) -> bytes:
        """The first file's bytes."""

    def first_filename(self) -> str:
        """The first file's name, as the client gave it."""


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
