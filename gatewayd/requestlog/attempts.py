"""The failed upstream attempts of a request, for its row's detail: a request trace that
wraps the one in force (OpenTelemetry's, or the no-op) and notes each failed attempt's
deployment, status, time and error (the attempt that answered is the row itself). The router sends every attempt through the request's
trace (:mod:`gatewayd.routing.attempt`), so nothing else needs to know."""

from __future__ import annotations

import time

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gatewayd.providers.base import AttemptLimits, Provider, ProviderRequest, UpstreamResponse
from gatewayd.tracing.request_trace import RequestSummary, RequestTrace, Sender, trace_of

#: One failed attempt: (deployment id, status or None, milliseconds, error text).
AttemptNote = tuple[str | None, int | None, float, str]


class AttemptRecorder(RequestTrace):
    """Notes failed attempts, and passes each through ``inner`` unchanged (same result,
    same cancellation)."""

    __slots__ = ("inner", "notes")

    def __init__(self, inner: RequestTrace) -> None:
        self.inner = inner
        self.notes: list[AttemptNote] = []

    def send(
        self,
        provider: Provider,
        request: ProviderRequest,
        limits: AttemptLimits,
        sender: Sender | None = None,
    ) -> Deferred[UpstreamResponse]:
        d = (
            self.inner.send(provider, request, limits)
            if sender is None
            else self.inner.send(provider, request, limits, sender)
        )
        started = time.monotonic()
        dep = getattr(getattr(provider, "deployment", None), "id", None)
        notes = self.notes

        def failed(result: Failure) -> Failure:
            ms = round((time.monotonic() - started) * 1000.0, 1)
            status = getattr(result.value, "status", None)
            text = getattr(result.value, "message", None) or result.getErrorMessage()
            notes.append((dep, status if isinstance(status, int) else None, ms, text[:300]))
            return result

        # Failed attempts only: the one that answered is the row itself (its deployment,
        # status and latency), noted in the stage's after; a success costs no callback.
        d.addErrback(failed)
        return d

    def finish(self, summary: RequestSummary) -> None:
        self.inner.finish(summary)


def recording(call: ProviderRequest) -> tuple[ProviderRequest, AttemptRecorder]:
    """``call`` with its trace wrapped by a recorder, and the recorder."""
    recorder = AttemptRecorder(trace_of(call))
    # Set in place: the call is this request's own (built per request by the web
    # layer), and a copy is a cost per request for nothing.
    object.__setattr__(call, "trace", recorder)
    return call, recorder
