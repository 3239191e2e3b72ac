"""What both upstream body readers share (:class:`~gatewayd.upstream.stream.StreamReader`
for SSE, :class:`~gatewayd.upstream.bytestream.ByteStream` for audio): reads held until the
sink is attached, flow control reaching the socket with the idle timer stopped while the
client is slow, cancellation, and the idle timeout's failure. Each keeps its own timer."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from twisted.internet.protocol import Protocol

from gatewayd.upstream.outcomes import (
    EventStream,
    FailureKind,
    StreamSink,
    UpstreamFailure,
    openai_error,
)


class UpstreamBody(Protocol, EventStream):
    """An upstream body handed on as it comes (see the module docstring)."""

    _idle_timeout: float
    _deployment: str
    _pending: list[bytes]
    _sink: StreamSink | None
    _ended: bool
    _end_failure: UpstreamFailure | None
    _paused: bool
    _idle_call: Any

    @abstractmethod
    def _arm_idle(self) -> None:
        """Start (or keep) the idle timer, unless paused or ended."""

    def _resumed(self) -> None:
        """Reading goes on after a pause: the idle timer with it."""
        self._arm_idle()

    def _disarm_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _idle_timeout_failure(self, what: str) -> UpstreamFailure:
        """The 504 of an upstream silent for the idle timeout in the middle of ``what``."""
        return UpstreamFailure(
            FailureKind.TIMEOUT,
            504,
            openai_error(
                f"upstream sent nothing for {self._idle_timeout:g} s in the middle of a {what}",
                "timeout",
                "stream_idle_timeout",
            ),
            deployment=self._deployment,
        )

    # -- EventStream -----------------------------------------------------------

    def start(self, sink: StreamSink) -> None:
        self._sink = sink
        if self._pending:
            sink.event(b"".join(self._pending))
            self._pending = []
        if self._ended:
            sink.end(self._end_failure)

    def pause(self) -> None:
        self._paused = True
        self._disarm_idle()  # a slow client is not an idle upstream
        if self.transport is not None and not self._ended:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def resume(self) -> None:
        self._paused = False
        if self.transport is not None and not self._ended:
            self.transport.resumeProducing()  # type: ignore[attr-defined]
            self._resumed()

    def cancel(self) -> None:
        if self.transport is not None and not self._ended:
            self.transport.stopProducing()  # type: ignore[attr-defined]
