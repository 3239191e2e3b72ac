"""Bodies in memory: a request body written in one go, a response body collected.

Both HTTP clients (the lean one and Twisted's ``Agent``) take and deliver these.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from gatewayd.upstream.encoding import Decoder, DecodingError
from gatewayd.upstream.outcomes import FailureKind, UpstreamFailure, openai_error


@implementer(IBodyProducer)
class BytesProducer:
    """A request body that is already in memory: written in one go."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BodyCollector(Protocol):
    """Collects a response body up to ``limit`` bytes (after decoding, with ``decoder``).

    ``done`` fires with the bytes; cancelling it drops the connection.
    """

    def __init__(self, limit: int, decoder: Decoder | None = None) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit
        self._decoder = decoder
        self.done: Deferred[bytes] = Deferred(self._cancel)

    def _cancel(self, _: Deferred[bytes]) -> None:
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def _refuse(self, message: str) -> None:
        self.done.errback(
            UpstreamFailure(
                FailureKind.BAD_RESPONSE,
                502,
                openai_error(message, "api_error", "bad_upstream_response"),
            )
        )
        self._cancel(self.done)

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        if self._decoder is not None:
            try:
                data = self._decoder.decode(data, self._limit - self._size)
            except DecodingError as e:
                self._refuse(str(e))
                return
        self._size += len(data)
        if self._size > self._limit:
            self._refuse(f"upstream response larger than {self._limit} bytes")
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        if self.done.called:
            return
        # isinstance, not Failure.check: check names every class of the hierarchy.
        if isinstance(reason.value, ResponseDone | PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)
