"""Hardening (issue 7, front half), in process: config types and secrets, warnings for
LiteLLM keys gatewayd does not honour, the YAML loader, request parsing at the channel
level (form parsing, Expect, malformed requests), JSON numbers, the listen backlog,
reload off the reactor thread, and the command line."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import yaml
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.web.resource import Resource

import gatewayd.service as service_module
from gatewayd.config import ConfigError, GatewayConfig, GeneralSettings, load_config, parse_config
from gatewayd.web.body import BodyError, parse_body
from gatewayd.web.request import GatewayRequest, GatewaySite

# -- helpers ---------------------------------------------------------------------

MOCK = {"model_name": "a", "params": {"model": "mock/a"}}


def parse(text: str, env: Mapping[str, str] | None = None) -> GatewayConfig:
    return parse_config(text, environ=dict(env or {}))


def refused(text: str, env: Mapping[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value


def with_params(params: str) -> str:
    return f"model_list:\n  - model_name: a\n    params:\n      model: openai/m\n{params}"


# -- item 6: YAML numbers are not secrets ------------------------------------------


@pytest.mark.parametrize("written", ["0123", "0x1A", "1:30", "12_345", "0b101", "0o17"])
def test_unquoted_api_key_that_yaml_1_1_reads_as_a_number_is_taken_as_written(
    written: str,
) -> None:
    c = parse(with_params(f"      api_key: {written}\n"))
    assert c.deployments[0].api_key == written


@pytest.mark.parametrize("written", ["12345", "1.50", "true", "[k]"])
def test_a_secret_that_is_still_not_a_string_is_refused_naming_the_key(written: str) -> None:
    e = refused(with_params(f"      api_key: {written}\n"))
    assert e.path == "model_list[0].params.api_key"
    assert "quote" in str(e) and written not in str(e).replace(e.path, "")


@pytest.mark.parametrize("written", ["0123", "12345", "1.5", "yes"])
def test_master_key_must_be_a_string(written: str) -> None:
    text = f"model_list: [{{model_name: a, params: {{model: mock/a}}}}]\ngeneral_settings:\n  master_key: {written}\n"
    if written in ("0123", "yes"):  # not numbers or booleans for gatewayd's YAML
        assert parse(text).general.master_key == written
    else:
        assert refused(text).path == "general_settings.master_key"


def test_azure_ad_token_and_secret_like_headers_must_be_strings() -> None:
    e = refused(
        "model_list:\n  - model_name: a\n    params:\n      model: azure/d\n"
        "      api_base: https://x.openai.azure.com\n      azure_ad_token: 12345\n"
    )
    assert e.path == "model_list[0].params.azure_ad_token"
    e = refused(with_params("      headers:\n        Authorization: 12345\n"))
    assert e.path == "model_list[0].params.headers.Authorization"
    # A plain header may be a number; odd YAML 1.1 forms stay as written.
    c = parse(with_params("      headers:\n        X-Priority: 5\n        X-Id: 0123\n"))
    assert dict(c.deployments[0].headers) == {"X-Priority": "5", "X-Id": "0123"}


def test_model_info_id_and_numbers_are_read_as_written() -> None:
    c = parse(
        "model_list:\n  - model_name: a\n    params: {model: mock/a}\n    model_info: {id: 0123}\n"
        "general_settings:\n  cooldown_time: 45\n  num_retries: 2\n  request_timeout: 1.5\n"
    )
    assert c.deployments[0].id == "0123"
    assert (c.general.cooldown_time, c.general.num_retries) == (45.0, 2)
    assert c.general.request_timeout == 1.5
    # Sexagesimal is no longer a number: a clear error instead of 90 seconds.
    e = refused(
        "model_list: [{model_name: a, params: {model: mock/a}}]\ngeneral_settings:\n  cooldown_time: 1:30\n"
    )
    assert e.path == "general_settings.cooldown_time"


def test_an_unquoted_date_like_api_version_is_the_string_written() -> None:
    c = parse(
        "model_list:\n  - model_name: a\n    params:\n      model: azure/d\n"
        "      api_base: https://x.openai.azure.com\n      api_key: k\n"
        "      api_version: 2024-10-21\n"
    )
    assert c.deployments[0].api_version == "2024-10-21"


def test_norway_is_a_string() -> None:
    c = parse("model_list:\n  - model_name: no\n    params: {model: mock/a, mock_response: off}\n")
    assert c.deployments[0].model_name == "no"
    assert c.deployments[0].extra["mock_response"] == "off"


# -- item 7: an empty master key ---------------------------------------------------


@pytest.mark.parametrize("value", ["", " null", " ~", ' ""'])
@pytest.mark.parametrize("section", ["general_settings", "litellm_settings"])
def test_present_but_empty_master_key_is_refused(value: str, section: str) -> None:
    e = refused(
        f"model_list: [{{model_name: a, params: {{model: mock/a}}}}]\n{section}:\n  master_key:{value}\n"
    )
    assert e.path == f"{section}.master_key"
    assert "empty" in e.reason


# -- item 8: keys read but not honoured -----------------------------------------------


def test_litellm_and_router_keys_not_honoured_are_warned_about_by_name() -> None:
    c = parse(
        "model_list: [{model_name: a, params: {model: mock/a}}]\n"
        "litellm_settings:\n  alerting: [slack]\n  success_callback: [langfuse]\n  drop_params: true\n"
        "  some_new_litellm_key: 1\n"
        "router_settings:\n  retry_policy: {RateLimitErrorRetries: 3}\n"
        "  redis_host: 127.0.0.1\n  redis_password: hunter2-SECRET\n  num_retries: 2\n"
    )
    text = "\n".join(c.warnings)
    for key in (
        "litellm_settings.alerting",
        "litellm_settings.success_callback",
        "litellm_settings.some_new_litellm_key",
        "router_settings.retry_policy",
    ):
        assert key in text, key
    assert "router_settings.num_retries" not in text  # honoured
    assert "drop_params" not in text and c.general.drop_params  # honoured (dialects)
    assert "redis_host" not in text and "redis_password" not in text  # read as the state store
    assert "hunter2" not in text and "RateLimitErrorRetries" not in text  # never values
    assert c.general.num_retries == 2


def test_one_table_of_keys_not_honoured() -> None:
    from gatewayd.config.general import NOT_HONOURED

    for key in ("alerting", "success_callback", "retry_policy", "database_url"):
        assert key in NOT_HONOURED
    # Honoured now (the state store, the response cache): must not be listed.
    for key in ("redis_host", "redis_port", "redis_password", "redis_url", "cache", "cache_params"):
        assert key not in NOT_HONOURED


# -- item 9: libyaml -------------------------------------------------------------------


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
def test_config_is_parsed_with_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[type] = []
    real = yaml.load

    def spy(stream: Any, Loader: type) -> Any:
        used.append(Loader)
        return real(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load", spy)
    parse("model_list: [{model_name: a, params: {model: mock/a}}]\n")
    assert used and issubclass(used[0], yaml.CSafeLoader)


def test_yaml_errors_keep_line_and_column() -> None:
    e = refused("model_list:\n  - model_name: a\n    params: [unclosed\n")
    assert "line" in e.reason and "column" in e.reason


# -- item 12: credentials in api_base ---------------------------------------------------


@pytest.mark.parametrize(
    "url", ["http://user:pa55-SECRET@127.0.0.1:9/v1", "https://pa55-SECRET@example.com/v1"]
)
def test_api_base_with_credentials_is_refused_without_showing_them(url: str) -> None:
    e = refused(with_params(f"      api_base: {url}\n"))
    assert e.path == "model_list[0].params.api_base"
    assert "credentials" in e.reason and "pa55" not in str(e)


def test_api_base_credentials_from_the_environment_are_refused_too() -> None:
    text = "model_list:\n  - model_name: a\n    params: {model: azure/d, api_key: k}\n"
    e = refused(text, env={"AZURE_API_BASE": "https://u:pa55-SECRET@x.openai.azure.com"})
    assert e.path == "model_list[0].params.api_base" and "pa55" not in str(e)


# -- item 4: listen backlog ------------------------------------------------------------


def test_listen_backlog_setting() -> None:
    assert (
        parse("model_list: [{model_name: a, params: {model: mock/a}}]\n").general.listen_backlog
        == 1024
    )
    c = parse(
        "model_list: [{model_name: a, params: {model: mock/a}}]\ngeneral_settings: {listen_backlog: 4096}\n"
    )
    assert c.general.listen_backlog == 4096
    e = refused(
        "model_list: [{model_name: a, params: {model: mock/a}}]\ngeneral_settings: {listen_backlog: 0}\n"
    )
    assert e.path == "general_settings.listen_backlog"


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("tcp:port=4000:interface=127.0.0.1", "tcp:port=4000:interface=127.0.0.1:backlog=2048"),
        ("tcp:4000", "tcp:4000:backlog=2048"),
        ("tcp6:port=4000", "tcp6:port=4000:backlog=2048"),
        ("unix:/run/gw.sock", "unix:/run/gw.sock:backlog=2048"),
        ("tcp:4000:backlog=10", "tcp:4000:backlog=10"),  # the user's own wins
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),  # systemd's socket
    ],
)
def test_backlog_is_added_to_endpoint_strings(listen: str, expected: str) -> None:
    assert service_module.with_backlog(listen, 2048) == expected


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_the_listening_port_gets_the_configured_backlog(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        "model_list: [{model_name: a, params: {model: mock/a}}]\n"
        "general_settings: {listen_backlog: 777}\n"
    )
    svc = service_module.GatewayService.from_file(
        str(path), "tcp:port=0:interface=127.0.0.1", handle_sighup=False
    )
    svc.startService()
    try:
        for _ in range(200):
            if svc.port is not None:
                break
            await _sleep(0.01)
        assert svc.port is not None
        assert getattr(svc.port, "backlog", None) == 777
    finally:
        await svc.stopService()


# -- item 5: reload off the reactor thread ------------------------------------------------


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds)


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_reload_reads_and_builds_off_the_reactor_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from twisted.internet import reactor

    path = tmp_path / "gw.yaml"
    path.write_text("model_list: [{model_name: a, params: {model: mock/a}}]\n")
    svc = service_module.GatewayService.from_file(
        str(path), "tcp:port=0:interface=127.0.0.1", handle_sighup=False
    )
    path.write_text("model_list: [{model_name: b, params: {model: mock/b}}]\n")
    events: list[str] = []
    gate = threading.Event()
    real = load_config

    def slow_load(p: str, environ: Any = None) -> GatewayConfig:
        events.append(
            "load on reactor thread"
            if threading.current_thread() is threading.main_thread()
            else "load in thread"
        )
        gate.wait(5)  # a slow disk, a huge file: the reactor must keep serving
        events.append("loaded")
        return real(p)

    monkeypatch.setattr(service_module, "load_config", slow_load)
    d = svc.reload()
    assert isinstance(d, Deferred)

    def tick() -> None:
        events.append("reactor tick")
        gate.set()

    reactor.callLater(0.01, tick)
    ok = await d
    assert ok is True
    assert events == ["load in thread", "reactor tick", "loaded"]
    assert set(svc.router.table.routes) == {"b"}


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_reload_refuses_a_fifo_and_keeps_the_config(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("model_list: [{model_name: a, params: {model: mock/a}}]\n")
    svc = service_module.GatewayService.from_file(
        str(path), "tcp:port=0:interface=127.0.0.1", handle_sighup=False
    )
    path.unlink()
    os.mkfifo(path)
    ok = await svc.reload()
    assert ok is False
    assert set(svc.router.table.routes) == {"a"}


def test_a_config_path_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_config(str(fifo))  # must not block
    assert "regular file" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert "regular file" in str(info.value)


# -- items 1 and 3 and siblings: the channel -------------------------------------------------


class _Echo(Resource):
    isLeaf = True

    def render_POST(self, request: GatewayRequest) -> bytes:
        try:
            body, _ = parse_body(request)
        except BodyError as e:
            request.setResponseCode(e.status)
            return json.dumps({"error": {"message": e.message, "code": e.code}}).encode()
        return json.dumps(
            {"got": body, "args": [k.decode() for k in sorted(request.args)]}
        ).encode()


@pytest.fixture
def site() -> Iterator[GatewaySite]:
    s = GatewaySite(_Echo(), lambda: GeneralSettings(max_request_body_size=1000))  # type: ignore[no-untyped-call]
    s.timeOut = None  # no idle timer on the global reactor
    yield s


def exchange(site: GatewaySite, data: bytes) -> tuple[bytes, StringTransport]:
    proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert proto is not None
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(data)
    return transport.value(), transport


def post(body: bytes, *headers: bytes) -> bytes:
    head = b"".join(h + b"\r\n" for h in headers)
    return (
        b"POST /x HTTP/1.1\r\nHost: t\r\n" + head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def split(response: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
    return status, headers, body


@pytest.mark.parametrize(
    "ctype",
    [
        b"multipart/form-data",
        b"multipart/form-data; boundary=x",
        b"application/x-www-form-urlencoded",
    ],
)
def test_twisted_form_parsing_never_runs(
    site: GatewaySite, monkeypatch: pytest.MonkeyPatch, ctype: bytes
) -> None:
    import twisted.web.http as twhttp

    calls: list[bytes] = []
    real = twhttp._parseContentType

    def spy(line: bytes) -> bytes:
        calls.append(line)
        return real(line)

    monkeypatch.setattr(twhttp, "_parseContentType", spy)
    out, _ = exchange(site, post(b'{"model": "m"}', b"Content-Type: " + ctype))
    status, _, body = split(out)
    assert calls == []
    assert status == 200 and json.loads(body) == {"got": {"model": "m"}, "args": []}


def test_expect_100_continue_over_the_limit_gets_413_at_once(site: GatewaySite) -> None:
    out, transport = exchange(
        site,
        b"POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 50000000\r\n\r\n",
    )
    assert b"100 Continue" not in out
    status, headers, body = split(out)
    assert status == 413
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"connection"] == b"close"
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "request_too_large"
    assert transport.disconnecting


def test_expect_100_continue_within_the_limit_still_continues(site: GatewaySite) -> None:
    out, _ = exchange(
        site, post(b'{"model": "m"}', b"Expect: 100-continue", b"Content-Type: application/json")
    )
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert split(out[len(b"HTTP/1.1 100 Continue\r\n\r\n") :])[0] == 200


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /a b c HTTP/1.1\r\nHost: t\r\n\r\n",  # a bad request line
        b"GET /x HTTP/1.1\r\nHost: t\r\nno colon here\r\n\r\n",  # a bad header
        b"GET /x HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n",  # an invalid header name
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    ],
)
def test_malformed_requests_get_a_json_400_not_a_bare_one(site: GatewaySite, raw: bytes) -> None:
    out, transport = exchange(site, raw)
    status, headers, body = split(out)
    assert status == 400
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert transport.disconnecting


def test_a_malformed_request_is_access_logged(site: GatewaySite) -> None:
    from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
    from zope.interface import implementer

    events: list[LogEvent] = []

    @implementer(ILogObserver)
    def observe(event: LogEvent) -> None:
        events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        exchange(site, b"POST /x HTTP/1.1\r\nHost: t\r\nno colon\r\n\r\n")
    finally:
        globalLogPublisher.removeObserver(observe)
    access = [e for e in events if e.get("log_namespace") == "gatewayd.access"]
    assert len(access) == 1 and access[0]["status"] == 400


# -- item 2: numbers that are not finite ---------------------------------------------------


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1" + b"0" * 400 + b".0"])
def test_a_number_too_large_for_a_float_is_a_400_naming_it(
    site: GatewaySite, number: bytes
) -> None:
    out, _ = exchange(site, post(b'{"model": "m", "temperature": ' + number + b"}"))
    status, _, body = split(out)
    assert status == 400
    error = json.loads(body)["error"]
    assert "temperature" in error["message"] or number[:6].decode() in error["message"]


def test_ordinary_floats_and_big_integers_pass(site: GatewaySite) -> None:
    out, _ = exchange(
        site, post(b'{"model": "m", "t": 0.7, "n": 1e3, "big": 123456789012345678901234567890}')
    )
    status, _, body = split(out)
    assert status == 200
    assert json.loads(body)["got"] == {
        "model": "m",
        "t": 0.7,
        "n": 1000.0,
        "big": 123456789012345678901234567890,
    }


# -- item 10: the command line ----------------------------------------------------------------


def test_usage_names_the_program() -> None:
    from gatewayd.cli import Options

    assert str(Options()).startswith("Usage: gatewayd ")


def test_a_bad_flag_is_one_short_error_not_the_whole_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from gatewayd.cli import Options

    with pytest.raises(SystemExit) as info:
        Options().parseOptions(["-c", "x.yaml", "-p", "abc"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--port" in err or "port" in err
    assert "Options:" not in err and len(err.strip().splitlines()) <= 2


def test_backlog_flag() -> None:
    from gatewayd.cli import Options

    o = Options()
    o.parseOptions(["-c", "x.yaml", "--backlog", "4096"])
    assert o["backlog"] == 4096
    with pytest.raises((SystemExit, usage.UsageError)):
        Options().parseOptions(["-c", "x.yaml", "--backlog", "0"])


def test_a_float_where_a_string_is_expected_is_refused_not_reformatted() -> None:
    # str(1.10) == "1.1": api_version and header values are taken as written or refused.
    e = refused(with_params("      api_version: 1.10\n"))
    assert e.path == "model_list[0].params.api_version" and "quote" in e.reason
    e = refused(with_params("      headers:\n        X-Version: 1.10\n"))
    assert e.path == "model_list[0].params.headers.X-Version"
    e = refused(
        "model_list:\n  - model_name: a\n    params: {model: mock/a}\n    model_info: {id: 1.10}\n"
    )
    assert e.path == "model_list[0].model_info.id"


@pytest_twisted.ensureDeferred  # type: ignore[untyped-decorator]
async def test_reloads_asked_while_one_runs_are_served_by_one_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("model_list: [{model_name: a, params: {model: mock/a}}]\n")
    svc = service_module.GatewayService.from_file(
        str(path), "tcp:port=0:interface=127.0.0.1", handle_sighup=False
    )
    loads: list[str] = []

    def counting_load(p: str, environ: Any = None) -> GatewayConfig:
        loads.append(p)
        return load_config(p)

    monkeypatch.setattr(service_module, "load_config", counting_load)
    first = svc.reload()
    new = tmp_path / "new.yaml"  # replaced atomically: the first reload may be reading
    new.write_text("model_list: [{model_name: c, params: {model: mock/c}}]\n")
    os.replace(new, path)
    second, third = svc.reload(), svc.reload()
    assert [await first, await second, await third] == [True, True, True]
    assert len(loads) == 2  # the two asked during the first made one more
    assert set(svc.router.table.routes) == {"c"}  # the latest file won


@pytest.mark.parametrize("target", [b"http://gw.test:4000/x", b"HTTPS://gw.test/x?q=1"])
def test_an_absolute_form_request_target_reaches_its_path(target: bytes) -> None:
    root = Resource()
    root.putChild(b"x", _Echo())  # type: ignore[no-untyped-call]
    tree = GatewaySite(root, lambda: GeneralSettings())
    tree.timeOut = None
    body = b'{"model": "m"}'
    out, _ = exchange(
        tree,
        b"POST "
        + target
        + b" HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body,
    )
    assert split(out)[0] == 200
