"""In-process checks of the upstream hardening: connecting (fast failover, EMFILE),
the SSE framer's bound, error schema, scrubbing, URL credentials and the debug line."""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Callable
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.client import URI
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from gatewayd.config import parse_config
from gatewayd.observability.log import set_verbose
from gatewayd.providers.base import AttemptLimits, Endpoint, ProviderRequest, UpstreamFailure
from gatewayd.providers.openai import OpenAICompatibleProvider, dump_json
from gatewayd.providers.replies import error_object as _error_object
from gatewayd.upstream.endpoints import FastFailoverEndpoint, getaddrinfo_in_thread
from gatewayd.upstream.http import DEFAULT_TLS, _CachedEndpoints
from gatewayd.upstream.redact import Redactor, loggable_url, split_credentials
from gatewayd.upstream.sse import EventTooLarge, SSEFramer
from gatewayd.upstream.stream import BadEvent, vet_event
from gatewayd.upstream.wirejson import loads_strict, normalise_error

# -- 8. a refused connection fails over at once -----------------------------------


def _fail_connect(reactor: MemoryReactorClock, index: int) -> None:
    _host, _port, factory, _timeout, _bind = reactor.tcpClients[index]
    factory.clientConnectionFailed(reactor.connectors[index], Failure(ConnectionRefusedError()))


def _connect(endpoint: Any) -> tuple[Deferred[Any], list[Any]]:
    results: list[Any] = []
    d = endpoint.connect(Factory.forProtocol(Protocol))
    d.addBoth(results.append)
    return d, results


def test_an_ip_literal_is_connected_to_directly_and_a_refusal_fails_at_once() -> None:
    reactor = MemoryReactorClock()
    endpoint = _CachedEndpoints(reactor, DEFAULT_TLS).endpointForURI(
        URI.fromBytes(b"http://127.0.0.1:9/v1")
    )
    _, results = _connect(endpoint)
    assert [c[:2] for c in reactor.tcpClients] == [("127.0.0.1", 9)]
    _fail_connect(reactor, 0)
    # No clock.advance(): Twisted's HostnameEndpoint needed its 0.3 s attempt delay here.
    assert len(results) == 1 and isinstance(results[0], Failure)
    assert results[0].check(ConnectionRefusedError)


def test_the_next_address_is_tried_as_soon_as_one_is_refused() -> None:
    reactor = MemoryReactorClock()
    resolved: list[str] = []

    def resolve(host: str, port: int) -> Deferred[list[str]]:
        resolved.append(host)
        return succeed(["::1", "127.0.0.1"])

    endpoint = FastFailoverEndpoint(reactor, "localhost", 12434, resolve)
    _, results = _connect(endpoint)
    assert resolved == ["localhost"]
    assert [c[0] for c in reactor.tcpClients] == ["::1"]
    _fail_connect(reactor, 0)
    assert [c[0] for c in reactor.tcpClients] == ["::1", "127.0.0.1"]  # at once
    assert results == []
    _fail_connect(reactor, 1)
    assert len(results) == 1 and isinstance(results[0], Failure)
    assert reactor.getDelayedCalls() == []  # no timer left behind


def test_a_slow_first_address_gets_a_parallel_attempt_after_the_delay() -> None:
    reactor = MemoryReactorClock()
    endpoint = FastFailoverEndpoint(
        reactor, "h.test", 443, lambda h, p: succeed(["10.0.0.1", "10.0.0.2"])
    )
    _connect(endpoint)
    assert len(reactor.tcpClients) == 1
    reactor.advance(0.3)
    assert [c[0] for c in reactor.tcpClients] == ["10.0.0.1", "10.0.0.2"]


# -- 7. out of file descriptors: a prompt connect failure --------------------------


class _InlinePool:
    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable[[], Any]
    ) -> None:
        try:
            result = f()
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class _ThreadedMemoryReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def getThreadPool(self) -> _InlinePool:
        return _InlinePool()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


def test_getaddrinfo_out_of_file_descriptors_fails_the_connect_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fds(*args: Any, **kw: Any) -> Any:
        # What CPython raises for EAI_SYSTEM: a plain OSError, not a gaierror.
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(socket, "getaddrinfo", no_fds)
    reactor = _ThreadedMemoryReactor()
    endpoint = FastFailoverEndpoint(reactor, "localhost", 12434)
    _, results = _connect(endpoint)
    assert len(results) == 1 and isinstance(results[0], Failure)
    value = results[0].value
    assert isinstance(value, OSError) and value.errno == errno.EMFILE
    assert reactor.tcpClients == []


def test_getaddrinfo_finds_loopback_addresses() -> None:
    results: list[Any] = []
    getaddrinfo_in_thread(_ThreadedMemoryReactor(), "127.0.0.1", 80).addBoth(results.append)
    assert results == [["127.0.0.1"]]


@implementer(IAgent)
class _RaisingAgent:
    """An agent whose connection cannot even start (as with EMFILE)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.urls: list[bytes] = []

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        self.urls.append(uri)
        d: Deferred[IResponse] = Deferred()
        d.errback(self.exc)
        return d


def _provider(agent: IAgent, **params: Any) -> OpenAICompatibleProvider:
    p = {"model": "openai/m", "api_base": "http://127.0.0.1:9/v1", "api_key": "sk-KEY-123456"}
    p.update(params)
    doc = {"model_list": [{"model_name": "a", "params": p}]}
    (d,) = parse_config(json.dumps(doc), environ={}).deployments
    return OpenAICompatibleProvider(d, agent, MemoryReactorClock())


def _send(provider: OpenAICompatibleProvider, body: dict[str, Any] | None = None) -> Any:
    request = ProviderRequest(Endpoint.CHAT, body or {"model": "a", "messages": []})
    out: list[Any] = []
    provider.send(request, AttemptLimits(timeout=5, idle_timeout=5)).addBoth(out.append)
    assert len(out) == 1, "the attempt must settle at once"
    return out[0]


def test_an_oserror_from_the_connection_is_a_connect_failure() -> None:
    result = _send(_provider(_RaisingAgent(OSError(errno.EMFILE, "Too many open files"))))
    assert isinstance(result, Failure) and isinstance(result.value, UpstreamFailure)
    assert result.value.kind.value == "connect" and result.value.status == 502


# -- 6. credentials in api_base ----------------------------------------------------


def test_api_base_credentials_are_never_sent_in_the_url_nor_shown() -> None:
    agent = _RaisingAgent(ConnectionRefusedError("refused by user:hunter2secret@"))
    doc = {"model": "openai/m", "api_base": "http://user:hunter2secret@127.0.0.1:9/v1"}
    p = {**doc, "api_key": "sk-KEY-123456"}
    provider = OpenAICompatibleProvider(_deployment_unchecked(p), agent, MemoryReactorClock())
    result = _send(provider)
    assert agent.urls == [b"http://127.0.0.1:9/v1/chat/completions"]
    assert isinstance(result.value, UpstreamFailure)
    assert "hunter2secret" not in json.dumps(result.value.error)
    assert split_credentials("https://u:p@h:1/x") == ("https://h:1/x", ["u:p", "u", "p"])
    assert loggable_url("https://u:pw@h/x?api-version=1&key=s3cret") == (
        "https://h/x?api-version=1&key=***"
    )


def _deployment_unchecked(params: dict[str, Any]) -> Any:
    """A deployment with credentials in api_base (the config loader may refuse them)."""
    from dataclasses import replace

    base = params["api_base"]
    clean = dict(params, api_base="http://127.0.0.1:9/v1")
    doc = {"model_list": [{"model_name": "a", "params": clean}]}
    (d,) = parse_config(json.dumps(doc), environ={}).deployments
    return replace(d, api_base=base)


# -- 10. one debug line per attempt -------------------------------------------------


def test_verbose_logs_each_attempt_with_url_status_and_time() -> None:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        set_verbose(True)
        _send(_provider(_RaisingAgent(ConnectionRefusedError()), api_base="http://127.0.0.1:9/v1"))
    finally:
        set_verbose(False)
        globalLogPublisher.removeObserver(observer)
    lines = [e for e in events if e.get("log_level") == LogLevel.debug and "url" in e]
    assert len(lines) == 1
    e = lines[0]
    assert str(e["url"]) == "http://127.0.0.1:9/v1/chat/completions"
    assert e["status"] == 502 and e["outcome"] == "connect"
    assert float(str(e["ms"])) >= 0
    assert "sk-KEY-123456" not in repr(e)


# -- 1, 2, 5: the pieces -----------------------------------------------------------


def test_strict_json_refuses_nan_infinity_and_deep_nesting() -> None:
    for text in ("NaN", '{"a": Infinity}', "[-Infinity]", "[" * 100_000 + "]" * 100_000):
        with pytest.raises(ValueError):
            loads_strict(text)
    assert loads_strict('{"a": "NaN"}') == {"a": "NaN"}
    with pytest.raises(ValueError, match="1e999"):
        dump_json({"temperature": float("inf")})


def test_error_objects_are_made_to_openais_schema() -> None:
    err = normalise_error({"code": 400, "message": None, "type": "", "param": 3, "x": 1}, "t")
    assert err == {"code": "400", "message": "", "type": "t", "param": "3", "x": 1}
    deep = b'{"error": ' * 100_000 + b"1" + b"}" * 100_000
    assert _error_object(500, deep)["message"].startswith("upstream returned HTTP 500: {")


def test_vetting_stream_events() -> None:
    r = Redactor(["sk-KEY-123456"])
    assert vet_event(b'data: {"a":"sk-KEY-123456"}\n\n', r) == b'data: {"a":"***"}\n\n'
    assert vet_event(b'data: {"text":"Infinity"}\n\n') == b'data: {"text":"Infinity"}\n\n'
    with pytest.raises(BadEvent):
        vet_event(b'data: {"x":NaN}\n\n')
    out = vet_event(b'event: error\ndata: {"error":{"code":5}}\n\n')
    assert out == (
        b'event: error\ndata: {"error":{"code":"5","message":"","type":"api_error",'
        b'"param":null}}\n\n'
    )
    assert (
        json.loads(vet_event(b'data: {"error":"ollama says no"}\n\n')[6:])["error"]["message"]
        == "ollama says no"
    )


def test_the_framer_bounds_an_event() -> None:
    f = SSEFramer(max_event=1000)
    assert f.feed(b"data: " + b"x" * 900) == []
    with pytest.raises(EventTooLarge):
        f.feed(b"x" * 200)
    g = SSEFramer(max_event=1000)
    with pytest.raises(EventTooLarge):
        g.feed(b"data: " + b"x" * 2000 + b"\n\n")
    h = SSEFramer(max_event=1000)
    assert h.feed(b"data: " + b"x" * 900 + b"\n\n" + b"data: y") == [
        b"data: " + b"x" * 900 + b"\n\n"
    ]
    assert h.pending == b"data: y"
