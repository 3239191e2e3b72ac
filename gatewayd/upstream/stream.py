"""Reading an upstream's SSE body: framing, decoding, vetting, flow control, idle timeout.

Every event is vetted before it goes on: secrets are scrubbed, error events are made
to OpenAI's error schema, and an event whose JSON holds NaN or Infinity (not JSON)
is a bad upstream response. A bad event, an event past the framer's bound, a corrupt
compressed body or a translator that cannot take an event ends the stream with an
in-band error (or, before the first event was handed on, fails the attempt so that
it is retried or falls back): never an exception in the reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss

from gatewayd.observability.log import get_logger
from gatewayd.upstream.body_stream import UpstreamBody
from gatewayd.upstream.encoding import Decoder, DecodingError
from gatewayd.upstream.http import _describe
from gatewayd.upstream.outcomes import (
    FailureKind,
    StreamSink,
    UpstreamFailure,
    openai_error,
)
from gatewayd.upstream.redact import Redactor
from gatewayd.upstream.sse import (
    DONE,
    EventTooLarge,
    SSEFramer,
    data_event,
    event_data,
    is_done,
    split_block,
)
from gatewayd.upstream.wirejson import loads_strict, normalise_error

log = get_logger(__name__)

#: Most bytes one upstream read may decode to (a compression bomb stops here).
MAX_DECODED_READ = 64 * 1024 * 1024


class BadEvent(ValueError):
    """An upstream event that cannot be passed on."""


def vet_event(event: bytes, redactor: Redactor | None = None) -> bytes:
    """``event`` fit for the client: scrubbed, its error (if any) in OpenAI's schema.

    Raises :class:`BadEvent` for JSON data holding NaN or Infinity."""
    if redactor:
        event = redactor.data(event)
    risky = b"NaN" in event or b"Infinity" in event
    if not risky and b'"error"' not in event:
        return event  # the common case costs three substring searches
    data = event_data(event)
    if data is None or data == b"[DONE]":
        return event
    try:
        obj = loads_strict(data)
    except ValueError as e:
        if risky and "is not JSON" in str(e):
            raise BadEvent("upstream sent a stream event holding NaN or Infinity") from None
        return event  # not JSON at all: passed on as it came (not ours to judge)
    if not isinstance(obj, dict) or "error" not in obj:
        return event
    error = obj["error"]
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        return event
    obj["error"] = normalise_error(error, "api_error")
    head = b"".join(line + b"\n" for line in event.split(b"\n") if line.startswith(b"event:"))
    return head + data_event(obj)


def _holds_done(block: bytes) -> bool:
    """One of the events of ``block`` (one event, or a plain block) is ``[DONE]``."""
    if b"[DONE]" not in block:
        return False
    if block == DONE or block.endswith(_AFTER_EVENT_DONE):  # the usual place: last
        return True
    return is_done(block) or any(map(is_done, split_block(block)))


_AFTER_EVENT_DONE = b"\n\n" + DONE


class StreamReader(UpstreamBody):
    """Reads an upstream SSE body event by event, with flow control and an idle timeout.

    ``first_bytes`` fires (with None) when the first body bytes arrive: until then
    the attempt may still be retried. After that, :meth:`start` attaches the sink.
    """

    def __init__(
        self,
        clock: IReactorTime,
        idle_timeout: float,
        translate: Callable[[bytes], list[bytes]] | None = None,
        deployment: str = "",
        require_done: bool = False,
        decoder: Decoder | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._translate = translate
        self._deployment = deployment
        self._decoder = decoder
        # (None when it has no secret: a test per read instead of a call.)
        self._redactor = redactor if redactor else None
        self._framer = SSEFramer()
        # A stream is complete with its [DONE]; without one, only a chunked body's clean
        # end is trusted (a close-delimited body cannot tell a clean close from a cut).
        self._require_done = require_done
        self._done_seen = False
        self._pending: list[bytes] = []
        self._sink: StreamSink | None = None
        self._ended = False
        self._end_failure: UpstreamFailure | None = None
        self._idle_failure: UpstreamFailure | None = None
        self._bad_failure: UpstreamFailure | None = None
        self._idle_call: Any = None
        self._quiet = 0  # idle ticks since the last read
        self._paused = False
        self.first_bytes: Deferred[None] = Deferred(lambda _: self.cancel())

    @property
    def usage(self) -> dict[str, Any] | None:
        # A translation that saw the upstream's usage says so (``final_usage``).
        found = getattr(self._translate, "final_usage", None)
        return found if isinstance(found, dict) else None

    # -- protocol side ---------------------------------------------------------

    def _events(self, data: bytes) -> list[bytes]:
        """The vetted client events ``data`` completes; raises on a bad upstream."""
        if self._decoder is not None:
            data = self._decoder.decode(data, MAX_DECODED_READ)
        if self._translate is None:
            # Passed through: the read's complete events stay one block of bytes, vetted
            # in one pass (what no event of it holds, the block does not hold either).
            block = self._framer.feed_block(data)
            if not block:
                return []
            redactor = self._redactor
            if (
                b"NaN" not in block
                and b"Infinity" not in block
                and b'"error"' not in block
                and (redactor is None or redactor.data(block) is block)
            ):
                return [block]
            return [vet_event(e, redactor) for e in split_block(block)]
        events = self._framer.feed(data)
        if not events:
            return events
        events = [out for e in events for out in self._translate(e)]
        if len(events) > 1:
            # The common case, a read of several plain events, vetted in one pass: what
            # no event of the read holds, the whole read does not hold either.
            joined = b"".join(events)
            redactor = self._redactor
            if (
                b"NaN" not in joined
                and b"Infinity" not in joined
                and b'"error"' not in joined
                and (not redactor or redactor.data(joined) is joined)
            ):
                return events
        return [vet_event(e, self._redactor) for e in events]

    def dataReceived(self, data: bytes) -> None:
        if self._bad_failure is not None:
            return
        try:
            events = self._events(data)
        except Exception as e:  # upstream bytes our framing/translation cannot take
            self._bad(e)
            return
        self._emit(events)
        if not self.first_bytes.called:
            self.first_bytes.callback(None)
        self._quiet = 0  # (the idle timer's ticks count from here: no clock read per read)
        if self._idle_call is None:
            self._arm_idle()

    def _emit(self, events: list[bytes]) -> None:
        if not events:
            return
        if not self._done_seen:
            # An element may be a block of several events (see _events).
            for e in events:
                if b"[DONE]" in e and _holds_done(e):
                    self._done_seen = True
        if self._sink is not None:
            self._sink.event(b"".join(events))
        else:
            self._pending.extend(events)

    def _bad(self, e: Exception) -> None:
        if isinstance(e, EventTooLarge):
            message, code = str(e), "upstream_event_too_large"
        elif isinstance(e, BadEvent | DecodingError):
            message, code = str(e), "bad_upstream_response"
        else:
            # A translator that met an event shape it does not know: say which kind only.
            log.warn(
                "stream from {deployment} sent an event the gateway cannot translate: {kind}",
                deployment=self._deployment,
                kind=type(e).__name__,
            )
            message = (
                f"upstream sent a stream event the gateway cannot translate ({type(e).__name__})"
            )
            code = "bad_upstream_response"
        self._bad_failure = UpstreamFailure(
            FailureKind.BAD_RESPONSE,
            502,
            openai_error(message, "api_error", code),
            deployment=self._deployment,
        )
        self._disarm_idle()
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        self._disarm_idle()
        failure: UpstreamFailure | None = None
        if self._bad_failure is not None:
            failure = self._bad_failure
        elif self._idle_failure is not None:
            failure = self._idle_failure
        elif not isinstance(reason.value, ResponseDone | PotentialDataLoss):
            # isinstance, not Failure.check: check names every class of the hierarchy.
            if isinstance(reason.value, CancelledError):
                failure = None
            else:
                failure = UpstreamFailure(
                    FailureKind.CONNECT,
                    502,
                    openai_error(
                        f"upstream stream broke off before it was complete: {_describe(reason)}",
                        "api_connection_error",
                        "upstream_stream_broken",
                    ),
                    deployment=self._deployment,
                )
        else:
            if self._framer.pending.strip():
                # A clean end with a last event missing its blank line: deliver it anyway.
                tail = self._framer.pending.rstrip(b"\r\n") + b"\n\n"
                failure = self._deliver_tail(tail)
            truncated = self._require_done or isinstance(reason.value, PotentialDataLoss)
            if failure is None and truncated and not self._done_seen and self.first_bytes.called:
                failure = UpstreamFailure(
                    FailureKind.CONNECT,
                    502,
                    openai_error(
                        "upstream stream ended without its end-of-stream event ([DONE])",
                        "api_connection_error",
                        "upstream_stream_truncated",
                    ),
                    deployment=self._deployment,
                )
        if not self.first_bytes.called:
            self.first_bytes.errback(
                failure
                or UpstreamFailure(
                    FailureKind.BAD_RESPONSE,
                    502,
                    openai_error("upstream closed the stream without sending anything"),
                    deployment=self._deployment,
                )
            )
            return
        self._ended = True
        self._end_failure = failure
        if self._sink is not None:
            self._sink.end(failure)

    def _deliver_tail(self, tail: bytes) -> UpstreamFailure | None:
        try:
            events = self._translate(tail) if self._translate is not None else [tail]
            events = [vet_event(e, self._redactor) for e in events]
        except Exception as e:
            self._bad(e)
            return self._bad_failure
        self._emit(events)
        return None

    # -- idle timeout ----------------------------------------------------------
    # One timer per stream ticking every half timeout, not one moved at every read: a
    # read only zeroes the count of quiet ticks (no clock read, no timer call per
    # frame). Three quiet ticks in a row: the upstream sent nothing for at least the
    # timeout (at most one and a half).

    def _arm_idle(self) -> None:
        if self._paused or self._idle_call is not None:
            return
        self._idle_call = self._clock.callLater(self._idle_timeout / 2, self._tick)

    def _tick(self) -> None:
        self._idle_call = None
        self._quiet += 1
        if self._quiet >= 3:
            self._idle()
        else:
            self._arm_idle()

    def _idle(self) -> None:
        self._idle_call = None
        self._idle_failure = self._idle_timeout_failure("stream")
        self.cancel()

    def _resumed(self) -> None:
        self._quiet = 0  # the time paused was the client's, not the upstream's
        self._arm_idle()
