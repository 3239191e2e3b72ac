"""What an upstream attempt ends in: a failure in OpenAI's error shape, or a started
stream and the sink it delivers to. Re-exported by :mod:`gatewayd.providers.base`, the
seam every provider implements; here so that the HTTP client below the providers can
raise and deliver them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum
from typing import Any, Protocol


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
        refused: bool = False,
    ) -> None:
        super().__init__(error.get("message", ""))
        self.kind = kind
        #: The connection was refused (or the host has no address): nothing was sent,
        #: and a retry straight away would be refused too (the router goes elsewhere).
        self.refused = refused
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.deployment = deployment

    @property
    def message(self) -> str:
        return str(self.error.get("message") or "")

    def __repr__(self) -> str:
        return f"UpstreamFailure({self.kind.value}, {self.status}, {self.message!r})"


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

    @property
    def usage(self) -> dict[str, Any] | None:
        """The usage the upstream reported that the client's events do not carry (a
        translated stream whose client did not ask for it); None when there is none."""
        return None

    @abstractmethod
    def pause(self) -> None: ...

    @abstractmethod
    def resume(self) -> None: ...

    @abstractmethod
    def cancel(self) -> None: ...
