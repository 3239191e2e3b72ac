"""FakeUpstream's behaviours (what it does with a request) and the records it keeps."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qs, urlsplit

#: Assistant content used when neither the behaviour nor the server overrides it.
DEFAULT_CONTENT: Final = "Hello from fake upstream"
#: Model ids listed by ``GET {prefix}/models`` unless the server is given others.
DEFAULT_MODELS: Final = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
#: ``system_fingerprint`` put in chat and completion responses.
SYSTEM_FINGERPRINT: Final = "fp_fake_upstream"
#: Unknown extra field added to chat/completion responses, to test pass-through.
EXTRA_FIELD: Final = "x_fake_extra"

_HOST: Final = "127.0.0.1"
_MODEL_CREATED: Final = 1_700_000_000
_CONTEXT_LENGTH_MESSAGE: Final = (
    "This model's maximum context length is 8192 tokens. However, your messages resulted in "
    "9000 tokens. Please reduce the length of the messages."
)
_BAD_JSON_MESSAGE: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)


# --------------------------------------------------------------------------------------------
# Behaviours
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Answer normally: a JSON object, or an SSE stream if the request asked for ``stream``.

    ``content`` overrides the server's assistant content for this reply, ``delay`` sleeps that
    many seconds before sending the response headers, ``headers`` are added to (or override)
    the response headers and ``finish_reason`` is reported in the choice.
    """

    content: str | None = None
    delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Error:
    """Answer with an OpenAI-shaped error: ``{"error": {message, type, param, code}}``.

    ``type`` defaults from the status (400 ``invalid_request_error``, 401
    ``authentication_error``, 403 ``permission_error``, 404 ``not_found_error``, 429
    ``rate_limit_error``, 5xx ``server_error``). ``headers`` are added to the response (e.g.
    ``{"Retry-After": "2"}`` or ``{"retry-after-ms": "150"}``). ``body``, when given, replaces
    the whole body (e.g. an HTML 502 page); its Content-Type is then ``text/html`` unless
    ``headers`` sets one.
    """

    status: int
    message: str = "The fake upstream was scripted to fail this request."
    type: str | None = None
    code: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


@dataclass(frozen=True)
class ContextLengthError(Error):
    """OpenAI's 400 ``context_length_exceeded`` error, with its real message text."""

    status: int = 400
    message: str = _CONTEXT_LENGTH_MESSAGE
    type: str | None = "invalid_request_error"
    code: str | None = "context_length_exceeded"
    param: str | None = "messages"


@dataclass(frozen=True)
class Hang:
    """Read the request, send nothing for ``seconds``, then close the connection (FIN).

    :meth:`FakeUpstream.close` wakes a hanging handler at once.
    """

    seconds: float


@dataclass(frozen=True)
class Reset:
    """Read the request, then reset the connection (RST, ``SO_LINGER`` 0) before any byte."""


@dataclass(frozen=True)
class StreamThenCut:
    """Start a normal 200 SSE stream, send ``events`` data events, then reset the connection.

    The events are the ones a streamed :class:`Reply` would send (the role chunk first, then one
    chunk per word, ...); neither ``[DONE]`` nor the terminating HTTP chunk is ever sent. The
    stream is sent whatever the request's ``stream`` flag.
    """

    events: int


@dataclass(frozen=True)
class NonJSON:
    """Answer ``status`` with ``Content-Type: application/json`` but an HTML body.

    The body is ``<html>oops</html>``.
    """

    status: int = 200


@dataclass(frozen=True)
class Stream:
    """A controlled 200 SSE stream, sent whatever the request's ``stream`` flag.

    The stream is: a role chunk, ``events`` content chunks (default: one per word of
    ``content`` or the server's content; words are cycled if ``events`` is larger), a chunk with
    ``finish_reason``, a usage chunk if the request set ``stream_options.include_usage``, then
    ``data: [DONE]`` if ``done``; the chunked body is always terminated properly. Headers are
    sent at once; ``first_byte_delay`` is slept before the first event and ``interval`` before
    each later one (peer closes are noticed during these sleeps). ``event_size`` pads each
    content piece to that many characters (for multi-megabyte backpressure tests). ``sndbuf``
    sets the socket's ``SO_SNDBUF`` (None leaves the OS default) so that blocked writes show up
    in :attr:`FakeUpstream.stream_stats`.
    """

    events: int | None = None
    interval: float = 0.0
    first_byte_delay: float = 0.0
    event_size: int = 0
    done: bool = True
    content: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    sndbuf: int | None = 64 * 1024


@dataclass(frozen=True)
class RawResponse:
    """Write exactly ``data`` as the response; then close the connection if ``close``."""

    data: bytes
    close: bool = True


@dataclass(frozen=True)
class SSEFramingStream:
    """A 200 ``text/event-stream`` response whose body is ``pieces``, each its own HTTP chunk.

    Use it to split events across reads, merge events, use ``\\r\\n`` line endings, comments
    and ``event:`` lines. ``interval`` is slept between pieces. Empty pieces are skipped (an
    empty HTTP chunk would end the body); the terminating chunk is sent after the last piece.
    """

    pieces: Sequence[bytes]
    interval: float = 0.0


#: Every scripted behaviour.
Behaviour: TypeAlias = (
    Reply | Error | Hang | Reset | StreamThenCut | NonJSON | Stream | RawResponse | SSEFramingStream
)
#: A behaviour, or a function choosing one from the recorded request.
BehaviourLike: TypeAlias = Behaviour | Callable[["RecordedRequest"], Behaviour]

_BEHAVIOUR_TYPES: Final = (
    Reply,
    Error,
    Hang,
    Reset,
    StreamThenCut,
    NonJSON,
    Stream,
    RawResponse,
    SSEFramingStream,
)


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received by the fake upstream.

    ``path`` includes the query string; ``headers`` maps lower-cased names to values (repeated
    headers joined with ``", "``); ``raw_headers`` keeps names, order and repeats as sent.
    ``connection_id`` numbers the TCP connection (1, 2, ...) the request arrived on, ``index``
    is its position in :attr:`FakeUpstream.requests` and ``received_at`` a
    :func:`time.monotonic` timestamp.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    raw_headers: tuple[tuple[str, str], ...]
    body: bytes
    connection_id: int = 0
    index: int = 0
    received_at: float = 0.0

    @property
    def bare_path(self) -> str:
        """The path without its query string."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string parsed with :func:`urllib.parse.parse_qs`."""
        return parse_qs(urlsplit(self.path).query)

    def json(self) -> Any:
        """Decode the body as JSON (raises :class:`ValueError` if it is not JSON)."""
        return json.loads(self.body)


@dataclass
class StreamStats:
    """Live progress of one SSE response written by the fake upstream.

    The handler thread updates the object while it writes, so tests can poll it.
    ``bytes_written`` counts body bytes accepted by the kernel (chunk framing included, headers
    excluded) and only grows after a whole chunk was sent, so it stalls while the peer does not
    read; ``events_written`` counts body chunks. ``finished`` is set once the terminating
    chunk was sent. ``client_closed`` is set when a write failed with a broken pipe/reset or
    the peer's close was seen while idle, ``closed_at`` being the :func:`time.monotonic` time
    that was noticed.
    """

    request_index: int
    path: str
    started_at: float
    bytes_written: int = 0
    events_written: int = 0
    finished: bool = False
    client_closed: bool = False
    closed_at: float | None = None

    def wait_stalled(self, quiet: float = 1.0, limit: float = 30.0) -> int:
        """``bytes_written`` once it has not grown for ``quiet`` seconds (the peer stopped
        reading and every buffer between is full), waited for at most ``limit`` seconds;
        -1 if the stream finished or never stalled. Waits on the stall itself, not on a
        guess of how long filling the buffers takes on a busy machine."""
        deadline = time.monotonic() + limit
        seen, since = self.bytes_written, time.monotonic()
        while time.monotonic() < deadline and not self.finished:
            time.sleep(0.05)
            now = self.bytes_written
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
        return -1


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def closed_port() -> int:
    """Return a 127.0.0.1 TCP port with nothing listening (for connection-refused tests).

    The port is bound, read and released, so it is free unless something grabs it meanwhile.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _sse(obj: object) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


_SSE_DONE: Final = b"data: [DONE]\n\n"


def _default_error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def _count_tokens(value: object) -> int:
    """A crude token count: words in strings, items in token arrays, recursively."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, int):
        return 1
    if isinstance(value, Mapping):
        if "content" in value:
            return _count_tokens(value["content"])
        if "text" in value:
            return _count_tokens(value["text"])
        return 0
    if isinstance(value, list):
        return sum(_count_tokens(item) for item in value)
    return 0


def _split_words(content: str) -> list[str]:
    """Split content into pieces that concatenate back to it exactly (one per word)."""
    pieces = re.findall(r"\s*\S+", content)
    rest = content[len("".join(pieces)) :]
    if rest:
        if pieces:
            pieces[-1] += rest
        else:
            pieces = [rest]
    return pieces


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
