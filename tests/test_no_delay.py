"""Client connections are set TCP_NODELAY: a stream's small frames are not held back by
Nagle's algorithm until the client acknowledged the frame before (issue 18)."""

from __future__ import annotations

import json

from twisted.internet.testing import StringTransport

from gatewayd.config import parse_config
from gatewayd.service import GatewayService
from gatewayd.web.answering import TwistedChannel
from gatewayd.web.channel import GatewayChannel


class _TCP(StringTransport):
    no_delay: bool | None = None

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def test_both_parsers_set_no_delay_on_each_connection() -> None:
    doc = {"model_list": [{"model_name": "a", "params": {"model": "openai/m"}}]}
    service = GatewayService(parse_config(json.dumps(doc)), "tcp:0")
    for name in ("llhttp", "twisted"):
        service.site.channel_type = GatewayChannel if name == "llhttp" else TwistedChannel
        transport = _TCP()
        service.site.buildProtocol(None).makeConnection(transport)
        assert transport.no_delay is True, name
    # A transport without the option (a UNIX socket) is left alone.
    service.site.buildProtocol(None).makeConnection(StringTransport())
