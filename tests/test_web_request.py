"""The request class on its own: a bug in a handler still answers in OpenAI's shape."""

from __future__ import annotations

import json

from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyChannel

from gatewayd.config.model import GeneralSettings
from gatewayd.web.request import GatewayRequest, GatewaySite


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


class _Leaf(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"/".join(request.prepath or []) + b"|" + b"/".join(request.postpath or [])


def _get(site: GatewaySite, path: bytes) -> bytes:
    transport = StringTransport()
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    written: bytes = transport.value()
    return written


def test_fixed_leaf_paths_are_found_as_the_tree_walk_finds_them() -> None:
    root, node = Resource(), Resource()
    leaf, deep = _Leaf(), _Leaf()  # type: ignore[no-untyped-call]
    node.putChild(b"b", deep)
    root.putChild(b"a", node)
    root.putChild(b"leaf", leaf)
    site = GatewaySite(root, lambda: GeneralSettings())
    found = site.leaf_for(b"/a/b")
    assert found is not None and found[0] is deep and found[1] == (b"a", b"b")
    assert site.leaf_for(b"/a") is None  # not a leaf: the tree is walked
    # The shortcut answers as the walk does, prepath included; paths past a leaf, an
    # escaped path and a trailing slash take the walk.
    assert _get(site, b"/a/b").endswith(b"a/b|")
    assert _get(site, b"/leaf/more/x").endswith(b"leaf|more/x")
    assert _get(site, b"/a/%62").endswith(b"a/b|")
    # A new tree on the site is seen.
    other = _Leaf()  # type: ignore[no-untyped-call]
    site.resource = Resource()
    site.resource.putChild(b"a", other)
    found = site.leaf_for(b"/a")
    assert found is not None and found[0] is other


class _Answer(Resource):
    """Answers as the exchange does (content-length, then the body in one write)."""

    isLeaf = True

    def render_GET(self, request: Request) -> int:
        assert isinstance(request, GatewayRequest)
        request.alias, request.deployment = "a", "d"
        request.setHeader(b"content-length", b"2")
        request.write(b"{}")
        request.finish()
        return NOT_DONE_YET


def _requests(site: GatewaySite) -> float:
    family = site.metrics.requests.family
    assert family is not None
    return sum(float(s.value) for s in family.series.values())


class _Watching(StringTransport):
    """Notes the site's request count at each write."""

    def __init__(self, site: GatewaySite) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.site = site
        self.seen: list[float] = []

    def write(self, data: bytes) -> None:
        self.seen.append(_requests(self.site))
        super().write(data)  # type: ignore[no-untyped-call]


def test_an_answer_is_counted_before_its_bytes_leave() -> None:
    site = GatewaySite(_Answer(), lambda: GeneralSettings())  # type: ignore[no-untyped-call]
    transport = _Watching(site)
    channel = site.buildProtocol(None)
    channel.makeConnection(transport)
    channel.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value().endswith(b"\r\n\r\n{}")  # type: ignore[no-untyped-call]
    # A scrape sent on the answer's heels (to another worker) must see this request.
    assert transport.seen and transport.seen[0] == 1
    assert _requests(site) == 1  # and only once
