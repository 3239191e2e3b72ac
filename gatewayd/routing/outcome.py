"""What routing one request comes to: a :class:`RouteResult`, or a :class:`RouteError`
in OpenAI's shape that names what each alias tried last failed with (briefly)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gatewayd.limits import Estimate, Refusal
from gatewayd.providers.base import FailureKind, UpstreamFailure, UpstreamResponse, openai_error


@dataclass
class RouteResult:
    """The first success, and what it took to get it."""

    response: UpstreamResponse
    alias: str
    deployment: str
    attempts: int
    fallback: str | None
    #: Call when a stream has been relayed to its end (frees the deployment's slot).
    finish: Callable[[UpstreamFailure | None], None] = field(default=lambda _: None)
    #: Seconds the answering upstream took (JSON body, or a stream's first byte).
    upstream_seconds: float = 0.0
    #: Deployment limit reservations to settle with the real usage (gatewayd.limits).
    tickets: list[Any] = field(default_factory=list)
    #: A hedged request: which copy answered (``primary`` or ``hedge``); else None.
    hedge: str | None = None


class RouteError(Exception):
    """Every attempt failed, or the request is the client's own problem.

    ``status`` and ``error`` are what the client gets, in OpenAI's shape.
    """

    def __init__(
        self,
        status: int,
        error: dict[str, Any],
        attempts: int,
        deployment: str | None = None,
        retry_after: float | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(error.get("message", ""))
        #: Extra response headers (``x-ratelimit-*`` on a 429 of our own).
        self.headers = headers
        self.status = status
        self.error = error
        self.attempts = attempts
        self.deployment = deployment
        #: The last upstream's Retry-After, for the client to honour.
        self.retry_after = retry_after


class AllCoolingDown(Exception):
    """Every deployment of the alias is in cooldown and a fallback is left."""


#: Longest reason given per alias in the summary of a failed chain, and of the summary.
REASON_CHARS = 80
SUMMARY_CHARS = 600


class AllLimited(Exception):
    """Every deployment of the alias is at its rpm/tpm limit."""


@dataclass
class Progress:
    attempts: int = 0
    #: Each alias tried, in order, with a short reason for its last failure.
    failed: dict[str, str] = field(default_factory=dict)
    #: Timed out or cancelled by the client: no further attempt may start.
    stopped: bool = False
    #: Deployments at their rpm/tpm limit in this request, and why.
    limited: dict[str, Refusal] = field(default_factory=dict)
    estimate: Estimate | None = None


def timed_out(alias: str, timeout: float, progress: Progress) -> RouteError:
    if progress.attempts == 0:
        return RouteError(
            503,
            openai_error(
                f"no deployment of {alias!r} could be tried within request_timeout "
                f"({timeout:g} s): all were at max_parallel_requests",
                "service_unavailable",
                "no_deployment_available",
            ),
            0,
        )
    so_far = f" ({summary(progress)})" if progress.failed else ""
    return RouteError(
        504,
        openai_error(
            f"request_timeout of {timeout:g} s exceeded after {progress.attempts} attempt(s)"
            + so_far,
            "timeout",
            "request_timeout",
        ),
        progress.attempts,
    )


def exhausted(last: UpstreamFailure | None, progress: Progress) -> RouteError:
    said = f"gatewayd: {progress.attempts} attempt(s) failed: {summary(progress)}"
    if last is None and progress.limited:
        soonest = min(progress.limited.values(), key=lambda r: r.retry_after)
        return RouteError(
            429,
            openai_error(
                f"{soonest.message()} ({said})", "rate_limit_error", "rate_limit_exceeded"
            ),
            progress.attempts,
            soonest.name,
            max(1.0, soonest.retry_after),
            soonest.headers,
        )
    if last is None:
        return RouteError(
            503,
            openai_error(
                f"no deployment could be tried ({said})",
                "service_unavailable",
                "no_deployment_available",
            ),
            progress.attempts,
        )
    error = dict(last.error)
    error["message"] = f"{last.message} ({said})" if last.message else said
    return RouteError(last.status, error, progress.attempts, last.deployment, last.retry_after)


def reason(f: UpstreamFailure) -> str:
    """A short reason for the chain's summary: the status of an HTTP error and the start
    of the message (upstream messages are scrubbed of keys by the provider layer)."""
    message = " ".join(f.message.split())
    if f.deployment and f"{f.deployment}: " in message:
        # "could not reach upstream openai/x@host: ConnectionRefusedError: ...": the alias
        # is named already, the cause is what is worth the room.
        message = message.split(f"{f.deployment}: ", 1)[1]
    if len(message) > REASON_CHARS:
        message = message[: REASON_CHARS - 3].rstrip() + "..."
    if f.kind is FailureKind.HTTP:
        return f"{f.status} {message}".rstrip()
    return message or f.kind.value


def summary(progress: Progress) -> str:
    """``smart: 503 overloaded; fast: upstream did not answer within 30 s``, bounded."""
    text = "; ".join(f"{alias}: {why}" for alias, why in progress.failed.items())
    if len(text) > SUMMARY_CHARS:
        text = text[: SUMMARY_CHARS - 3].rstrip() + "..."
    return text


def outcome_label(f: UpstreamFailure) -> str:
    """A low-cardinality label for a failed attempt: ``http_503``, ``connect``, ``timeout``."""
    return f"http_{f.status}" if f.kind is FailureKind.HTTP else f.kind.value
