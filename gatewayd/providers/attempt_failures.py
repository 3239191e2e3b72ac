"""What a failed HTTP attempt becomes: an :class:`UpstreamFailure` in OpenAI's shape
(timeouts 504, connection failures 502), or a cancellation left as it is."""

from __future__ import annotations

from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from gatewayd.upstream.http import _describe
from gatewayd.upstream.outcomes import FailureKind, UpstreamFailure, openai_error

#: Connection failures that are a definite answer: nothing listens there (or the name has
#: no address). A reset or a timeout may be passing; these are not.
_DEFINITE = (net_error.ConnectionRefusedError, net_error.DNSLookupError, net_error.NoRouteError)


def attempt_failure(failure: Failure, deployment: str, timeout: float) -> Failure:
    """Every failure leaves as an :class:`UpstreamFailure`, except a cancellation."""
    if isinstance(failure.value, UpstreamFailure):
        failure.value.deployment = deployment
        return failure
    if failure.check(TimeoutError):
        return Failure(
            UpstreamFailure(
                FailureKind.TIMEOUT,
                504,
                openai_error(
                    f"upstream did not answer within {timeout:g} s",
                    "timeout",
                    "upstream_timeout",
                ),
                deployment=deployment,
            )
        )
    if failure.check(CancelledError):
        return failure
    if failure.check(
        net_error.ConnectError,
        net_error.ConnectionLost,
        net_error.ConnectionDone,
        net_error.DNSLookupError,
        ResponseNeverReceived,
        ResponseFailed,
        OSError,
    ):
        # OSError covers a socket that could not even be created (EMFILE, ENOBUFS).
        return Failure(
            UpstreamFailure(
                FailureKind.CONNECT,
                502,
                openai_error(
                    f"could not reach upstream {deployment}: {_describe(failure)}",
                    "api_connection_error",
                    "upstream_connection_error",
                ),
                deployment=deployment,
                refused=failure.check(*_DEFINITE) is not None,
            )
        )
    return failure


def is_cancellation(failure: Failure) -> bool:
    """A cancellation, possibly wrapped by the HTTP client in ResponseNeverReceived/Failed."""
    if failure.check(CancelledError, net_error.ConnectingCancelledError):
        return True
    reasons = getattr(failure.value, "reasons", None) or []
    return any(isinstance(r, Failure) and r.check(CancelledError) for r in reasons)
