"""The request class on its own: a bug in a handler still answers in OpenAI's shape."""

from __future__ import annotations

import json

from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyChannel

from gatewayd.web.request import GatewayRequest


def test_processing_failure_is_a_json_500_without_a_traceback() -> None:
    channel = DummyChannel()
    request = GatewayRequest(channel)
    request.method = b"POST"
    request.uri = request.path = b"/v1/chat/completions"
    request.clientproto = b"HTTP/1.1"
    try:
        raise RuntimeError("a bug with a secret sk-should-not-show")
    except RuntimeError:
        reason = Failure()
    request.processingFailed(reason)
    assert request.finished
    assert request.code == 500
    written = channel.transport.written.getvalue()
    head, _, body = written.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "internal_error"
    assert b"sk-should-not-show" not in written and b"Traceback" not in written
