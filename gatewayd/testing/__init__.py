"""Test helpers for gatewayd and for users testing code that talks to it.

* :mod:`gatewayd.testing.upstream`: :class:`FakeUpstream`, a scriptable fake OpenAI-compatible
  upstream HTTP server (stdlib only, thread-based), with behaviours such as :class:`Error`,
  :class:`Hang`, :class:`Reset` and :class:`Stream`.
* :mod:`gatewayd.testing.daemon`: :class:`GatewayProcess`, which runs the real gateway daemon
  as a subprocess for end-to-end tests.
"""

from gatewayd.testing.daemon import (
    GatewayDidNotExit,
    GatewayProcess,
    GatewayStartupError,
    free_port,
    run_gateway_expecting_failure,
)
from gatewayd.testing.upstream import (
    DEFAULT_CONTENT,
    DEFAULT_MODELS,
    Behaviour,
    BehaviourLike,
    ContextLengthError,
    Error,
    FakeUpstream,
    Hang,
    NonJSON,
    RawResponse,
    RecordedRequest,
    Reply,
    Reset,
    SSEFramingStream,
    Stream,
    StreamStats,
    StreamThenCut,
    closed_port,
)

__all__ = [
    "DEFAULT_CONTENT",
    "DEFAULT_MODELS",
    "Behaviour",
    "BehaviourLike",
    "ContextLengthError",
    "Error",
    "FakeUpstream",
    "GatewayDidNotExit",
    "GatewayProcess",
    "GatewayStartupError",
    "Hang",
    "NonJSON",
    "RawResponse",
    "RecordedRequest",
    "Reply",
    "Reset",
    "SSEFramingStream",
    "Stream",
    "StreamStats",
    "StreamThenCut",
    "closed_port",
    "free_port",
    "run_gateway_expecting_failure",
]
