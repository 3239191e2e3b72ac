"""Each upstream attempt of a request, for its detail in the request log: which
deployment, what it answered, how long it took. Recorded by wrapping the request's
trace, whose :meth:`~gatewayd.tracing.request_trace.RequestTrace.send` every attempt
goes through (tracing itself, when on, still runs inside)."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gatewayd.providers.base import AttemptLimits, Provider, ProviderRequest, UpstreamResponse
from gatewayd.tracing.request_trace import RequestSummary, RequestTrace, Sender

#: Longest error message kept per attempt.
MAX_ERROR = 300


class AttemptRecorder(RequestTrace):
    """Notes each attempt as ``[deployment, status or None, ms, error or None]``."""

    def __init__(self, inner: RequestTrace) -> None:
        self.inner = inner
        self.attempts: list[list[Any]] = []

    def send(
        self,
        provider: Provider,
        request: ProviderRequest,
        limits: AttemptLimits,
        sender: Sender | None = None,
    ) -> Deferred[UpstreamResponse]:
        entry: list[Any] = [getattr(provider.deployment, "id", None), None, None, None]
        self.attempts.append(entry)
        started = time.monotonic()

        def done(result: Any) -> Any:
            entry[2] = (time.monotonic() - started) * 1000.0
            if isinstance(result, Failure):
                e = result.value
                entry[1] = getattr(e, "status", None)
                message = getattr(e, "message", None)
                entry[3] = (message if isinstance(message, str) else type(e).__name__)[:MAX_ERROR]
            else:
                entry[1] = getattr(result, "status", None)
            return result

        if sender is None:
            sent = self.inner.send(provider, request, limits)
        else:
            sent = self.inner.send(provider, request, limits, sender)
        return sent.addBoth(done)

    def finish(self, summary: RequestSummary) -> None:
        self.inner.finish(summary)
