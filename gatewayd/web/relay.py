"""The relay from an upstream stream to the client: one producer chain.

Registered on the client's request as a streaming push producer, so the client's
transport pauses and resumes the upstream read directly (backpressure end to end).
The provider's stream reader translates the upstream's events to chat; a
:class:`~gatewayd.dialects.stages.Stage` here turns them into the client's
dialect (the identity for chat clients) and words a mid-stream failure as that
dialect's error event.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from gatewayd.dialects.stages import Stage
from gatewayd.dialects.usage import Spent, event_usage, merge_usage
from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.providers.base import EventStream, StreamSink, UpstreamFailure
from gatewayd.stages.base import StreamTap
from gatewayd.upstream.sse import DONE
from gatewayd.web.request import GatewayRequest

log = get_logger(__name__)


class _Gone(EventStream):
    """The stream once relayed to its end: the relay lets go of the reader (which
    holds the relay as its sink), so that neither is left in a reference cycle."""

    def start(self, sink: StreamSink) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def cancel(self) -> None: ...


_GONE = _Gone()


def _ignore(_: UpstreamFailure | None) -> None: ...


@implementer(IPushProducer)
class StreamRelay:
    """Writes each upstream event to the client as it arrives; ends the response
    cleanly, with an in-band error event when the upstream broke off."""

    def __init__(
        self,
        request: GatewayRequest,
        stream: EventStream,
        on_end: Callable[[UpstreamFailure | None], None],
        metrics: GatewayMetrics,
        alias: str,
        stage: Stage | None = None,
        taps: Sequence[StreamTap] = (),
    ) -> None:
        self.request = request
        self.metrics = metrics
        self.alias = alias
        self.stage = stage or Stage()
        #: The identity stage (not a subclass): its feed is done inline, per read.
        self._identity = type(self.stage) is Stage
        self._first = True
        self.stream = stream
        self._on_end = on_end
        self.client_gone = False
        self.ended = False
        self.usage: dict[str, Any] | None = None
        #: The stages' taps (a cache recording the stream): fed what the upstream sent.
        self.taps = tuple(taps)

    @property
    def saw_done(self) -> bool:
        """The stream reached its dialect's end marker."""
        return self.stage.complete

    def begin(self) -> None:
        """Start relaying: register for flow control and disconnects, attach to the stream."""
        self.metrics.open_streams += 1
        self.request.registerProducer(self, True)
        # Twisted does not pause a producer registered while the transport is already
        # full (a pipelined request behind a big response): start paused then.
        if getattr(self.request.channel, "_waitingForTransport", False):
            self.stream.pause()
        # The client going before the end (GatewayRequest.on_lost: no notifyFinish
        # Deferred per stream); the routing it replaces is over.
        self.request.on_lost = self._client_lost
        self.stream.start(self)

    # -- StreamSink ------------------------------------------------------------

    def event(self, data: bytes) -> None:
        if self.client_gone or self.ended:
            return
        if b'"usage"' in data:  # parse only the events that can carry usage
            self._note_usage(data)
        for tap in self.taps:
            tap.event(data)
        if self._identity:  # a chat client's stream: the bytes as they came
            if data.endswith(DONE):
                self.stage.complete = True
            out = data
        else:
            out = self.stage.feed(data)
            if not out:
                return
        if self._first:
            self._first = False
            self.metrics.ttft.observe(
                time.monotonic() - self.request.started, self.alias, self.request.deployment or "-"
            )
            self.request.write(out)  # the status line and headers go with it
            return
        self.request.write_chunk(out)

    def end(self, failure: UpstreamFailure | None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.usage is None:  # none in the client's events: the upstream's, if known
            known = getattr(self.stream, "usage", None)
            if known is not None:
                self.usage = self.request.usage = known
        self.stream = _GONE
        self.metrics.open_streams -= 1
        if not self.request.cached:  # a cached answer's tokens were counted when it was made
            spent = Spent.from_usage(self.usage)
            if spent is not None:
                dep = self.request.deployment or "-"
                self.metrics.count_usage(self.alias, dep, spent.prompt, spent.completion)
        for tap in self.taps:
            tap.end(failure is None and self.saw_done)
        if not self.client_gone:
            if failure is not None:
                log.warn(
                    "stream from {dep} broke off after it started: {msg}",
                    dep=failure.deployment or self.request.deployment,
                    msg=failure.message,
                )
                self.request.outcome = "upstream_broke_mid_stream"
                self.request.write(self.stage.fail(failure.status, failure.error))
            else:
                tail = self.stage.end()
                if tail:
                    self.request.write(tail)
            self.request.unregisterProducer()
            self.request.finish()
        on_end, self._on_end = self._on_end, _ignore  # (it holds the reader: no cycle)
        on_end(failure)

    # -- IPushProducer (driven by the client's transport) ----------------------

    def pauseProducing(self) -> None:
        self.stream.pause()

    def resumeProducing(self) -> None:
        self.stream.resume()

    def stopProducing(self) -> None:
        self._client_lost()

    def _client_lost(self) -> None:
        if self.client_gone or self.ended:
            return
        self.client_gone = True
        if self.saw_done:
            self.request.outcome = "ok"
        else:
            self.request.outcome = "client_closed_mid_stream"
        self.stream.cancel()
        self.stream = _GONE
        # The request still names this relay its producer (the connection is gone, so
        # there is nothing to unregister from): let go, no cycle.
        self.request.producer = None
        self.ended = True
        self.metrics.open_streams -= 1
        for tap in self.taps:
            tap.end(False)
        on_end, self._on_end = self._on_end, _ignore
        on_end(None)

    def _note_usage(self, data: bytes) -> None:
        # Only the lines that name usage (a read can hold many events): found, not split.
        at = data.find(b'"usage"')
        while at != -1:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            if end == -1:
                end = len(data)
            line = data[start:end]
            if line.startswith(b"data:"):
                try:
                    obj = json.loads(line[5:])
                except ValueError:
                    obj = None
                usage = event_usage(obj)
                if usage is not None:
                    self.usage = self.request.usage = merge_usage(self.usage, usage)
            at = data.find(b'"usage"', end)
