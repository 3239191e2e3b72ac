"""Each upstream attempt of a request, for its row's detail: a request trace that wraps
the one in force (OpenTelemetry's, or the no-op) and notes each attempt's deployment,
status, time and error as it ends. The router sends every attempt through the request's
trace (:mod:`gatewayd.routing.attempt`), so nothing else needs to know."""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gatewayd.providers.base import AttemptLimits, Provider, ProviderRequest, UpstreamResponse
from gatewayd.tracing.request_trace import RequestSummary, RequestTrace, Sender, trace_of

#: One attempt: (deployment id, status or None, milliseconds, error text or None).
AttemptNote = tuple[str | None, int | None, float, str | None]


class AttemptRecorder(RequestTrace):
    """Notes attempts, and passes each through ``inner`` unchanged (same result, same
    cancellation)."""

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

        def noted(result: Any) -> Any:
            ms = round((time.monotonic() - started) * 1000.0, 1)
            if isinstance(result, Failure):
                status = getattr(result.value, "status", None)
                text = getattr(result.value, "message", None) or result.getErrorMessage()
                notes.append((dep, status if isinstance(status, int) else None, ms, text[:300]))
            else:
                notes.append((dep, getattr(result, "status", None), ms, None))
            return result

        d.addBoth(noted)
        return d

    def finish(self, summary: RequestSummary) -> None:
        self.inner.finish(summary)


def recording(call: ProviderRequest) -> tuple[ProviderRequest, AttemptRecorder]:
    """``call`` with its trace wrapped by a recorder, and the recorder."""
    recorder = AttemptRecorder(trace_of(call))
    # A copy with one field changed, without dataclasses.replace's __init__ (several
    # times the cost, per request): the class is a frozen dataclass with a __dict__.
    copy = object.__new__(type(call))
    copy.__dict__.update(call.__dict__)
    object.__setattr__(copy, "trace", recorder)
    return copy, recorder
