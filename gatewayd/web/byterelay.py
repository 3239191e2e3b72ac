"""The relay of a binary upstream body (speech audio) to the client, bytes as they come.

Registered on the client's request as a streaming push producer, so a slow client
pauses the upstream read itself (backpressure end to end, nothing gathered). The body
goes out chunked with the upstream's ``Content-Type``. A break after the first byte
cannot be worded in audio: the connection is dropped without the chunked terminator,
so the client sees a truncated body rather than a short one that looks whole.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from gatewayd.observability.log import get_logger
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.providers.base import EventStream, UpstreamFailure
from gatewayd.stages import StreamTap
from gatewayd.web.request import GatewayRequest

log = get_logger(__name__)


@implementer(IPushProducer)
class ByteRelay:
    """Writes each upstream read to the client; finishes the response at the clean end."""

    def __init__(
        self,
        request: GatewayRequest,
        stream: EventStream,
        on_end: Callable[[UpstreamFailure | None], None],
        metrics: GatewayMetrics,
        alias: str,
        taps: Sequence[StreamTap] = (),
    ) -> None:
        self.request = request
        self.stream = stream
        self.metrics = metrics
        self.alias = alias
        self._on_end = on_end
        #: The stages' taps: told the stream was not SSE they could keep (end(False)).
        self.taps = tuple(taps)
        self._first = True
        self.client_gone = False
        self.ended = False
        #: Bytes written to the client.
        self.sent = 0

    def begin(self) -> None:
        """Register for flow control and disconnects, then attach to the stream."""
        self.metrics.open_streams += 1
        self.request.registerProducer(self, True)
        if getattr(self.request.channel, "_waitingForTransport", False):
            self.stream.pause()
        self.request.on_lost = self._client_lost
        self.stream.start(self)

    # -- StreamSink ------------------------------------------------------------

    def event(self, data: bytes) -> None:
        if self.client_gone or self.ended or not data:
            return
        if self._first:
            self._first = False
            self.metrics.ttft.observe(
                time.monotonic() - self.request.started, self.alias, self.request.deployment or "-"
            )
        self.sent += len(data)
        self.request.write(data)

    def end(self, failure: UpstreamFailure | None) -> None:
        if self.ended:
            return
        self.ended = True
        self.metrics.open_streams -= 1
        for tap in self.taps:
            tap.end(False)
        if not self.client_gone:
            self.request.unregisterProducer()
            if failure is not None:
                log.warn(
                    "body from {dep} broke off after it started: {msg}",
                    dep=failure.deployment or self.request.deployment,
                    msg=failure.message,
                )
                self.request.outcome = "upstream_broke_mid_stream"
                transport = self.request.channel.transport if self.request.channel else None
                if transport is not None:  # abortConnection: no clean close of a cut body
                    getattr(transport, "abortConnection", transport.loseConnection)()
            else:
                self.request.finish()
        self._on_end(failure)

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
        self.request.outcome = "client_closed_mid_stream"
        self.stream.cancel()
        self.ended = True
        self.metrics.open_streams -= 1
        for tap in self.taps:
            tap.end(False)
        self._on_end(None)
