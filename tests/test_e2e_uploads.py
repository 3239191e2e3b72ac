"""End to end: multipart uploads (transcriptions, translations, image edits and
variations) through the real daemon with the official openai SDK: the form relayed
byte for byte (only ``model`` replaced), resent whole on a retry, bounded in size."""

from __future__ import annotations

import base64
import json
import socket
from typing import Any

import openai
import pytest
from conftest import EXAMPLE_CONFIG, GatewayFactory, openai_entry
from test_e2e_api import assert_openai_error, raw
from test_e2e_endpoints import http_answer, mock_entry

from gatewayd.providers.mock_media import png, wav
from gatewayd.testing import Error, FakeUpstream


class Captured:
    """An openai SDK whose request bodies are kept (to compare with what upstreams got)."""

    def __init__(self, base_url: str) -> None:
        self.bodies: list[bytes] = []
        # The SDK's own client class (its httpx flavour), with a hook that keeps bodies.
        http = openai.DefaultHttpxClient(event_hooks={"request": [self._keep]}, timeout=30)
        self.sdk = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, http_client=http)

    def _keep(self, request: Any) -> None:
        self.bodies.append(request.read())


def with_model(body: bytes, alias: str, model: str) -> bytes:
    old = b'name="model"\r\n\r\n' + alias.encode() + b"\r\n"
    assert body.count(old) == 1
    return body.replace(old, b'name="model"\r\n\r\n' + model.encode() + b"\r\n")


AUDIO = wav(0.5)


def test_mock_transcribes_translates_and_edits_with_the_sdk(
    gateway: GatewayFactory, tmp_path: Any
) -> None:
    gw = gateway(EXAMPLE_CONFIG)
    c = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=30)
    path = tmp_path / "hello.wav"
    path.write_bytes(AUDIO)
    with path.open("rb") as f:
        text = c.audio.transcriptions.create(model="demo", file=f)
    assert "gatewayd" in text.text
    with path.open("rb") as f:
        verbose = c.audio.transcriptions.create(
            model="demo", file=f, response_format="verbose_json"
        )
    assert verbose.duration == pytest.approx(0.5, abs=0.01)
    with path.open("rb") as f:
        srt = c.audio.transcriptions.create(model="demo", file=f, response_format="srt")
    assert isinstance(srt, str) and srt.startswith("1\n00:00:00,000 --> 00:00:00,500\n")
    with path.open("rb") as f:
        events = list(c.audio.transcriptions.create(model="demo", file=f, stream=True))
    assert events[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in events[:-1] if e.type == "transcript.text.delta") == (
        events[-1].text
    )
    with path.open("rb") as f:
        assert c.audio.translations.create(model="demo", file=f).text
    edited = c.images.edit(
        model="demo", image=("in.png", png(b"x"), "image/png"), prompt="add a hat", n=2
    )
    assert edited.data is not None and len(edited.data) == 2
    assert base64.b64decode(edited.data[0].b64_json or "").startswith(b"\x89PNG")
    varied = c.images.create_variation(model="demo", image=("in.png", png(b"y"), "image/png"))
    assert varied.data is not None and len(varied.data) == 1
    _, _, text_metrics = raw(gw.port, "GET", "/metrics")
    assert b'endpoint="transcriptions",status="200"} 4' in text_metrics


def test_transcription_relayed_byte_for_byte_and_resent_whole_on_fallback(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    upstream.set_default(Error(503))
    upstream2.enqueue(http_answer(b"hello there\n", "text/plain; charset=utf-8"))
    gw = gateway(
        {
            "model_list": [
                openai_entry("whisper", upstream, model="whisper-1"),
                openai_entry("backup", upstream2, model="whisper-large"),
            ],
            "general_settings": {"num_retries": 1, "fallbacks": [{"whisper": ["backup"]}]},
        }
    )
    client = Captured(gw.base_url)
    got = client.sdk.audio.transcriptions.create(
        model="whisper",
        file=("speech.wav", AUDIO, "audio/wav"),
        response_format="text",
        language="en",
        timestamp_granularities=["word", "segment"],
    )
    assert got == "hello there\n"
    sent = client.bodies[0]
    assert upstream.count("/audio/transcriptions") == 2
    for r in upstream.requests:
        assert r.body == with_model(sent, "whisper", "whisper-1")
    last = upstream2.last_request
    assert last.bare_path == "/v1/audio/transcriptions"
    assert last.body == with_model(sent, "whisper", "whisper-large")
    assert last.headers["content-type"] == (
        "multipart/form-data; boundary=" + sent.split(b"\r\n", 1)[0][2:].decode()
    )


def test_image_edit_with_several_files_reaches_the_upstream_whole(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    answer = {"created": 1, "data": [{"url": "https://example.invalid/a.png"}]}
    upstream.enqueue(http_answer(json.dumps(answer).encode()))
    gw = gateway({"model_list": [openai_entry("painter", upstream, model="gpt-image-1")]})
    client = Captured(gw.base_url)
    edited = client.sdk.images.edit(
        model="painter",
        image=[("a.png", png(b"a", 64), "image/png"), ("b.png", png(b"b", 64), "image/png")],
        mask=("m.png", png(b"m"), "image/png"),
        prompt="merge them",
    )
    assert edited.data is not None and edited.data[0].url == "https://example.invalid/a.png"
    sent = upstream.last_request
    assert sent.bare_path == "/v1/images/edits"
    assert sent.body == with_model(client.bodies[0], "painter", "gpt-image-1")


def test_upload_errors_are_openai_400s(gateway: GatewayFactory) -> None:
    gw = gateway({"model_list": [mock_entry("whisper")]})
    headers = {"content-type": "multipart/form-data; boundary=XX"}
    form = b'--XX\r\nContent-Disposition: form-data; name="language"\r\n\r\nen\r\n--XX--\r\n'
    status, _, body = raw(gw.port, "POST", "/v1/audio/transcriptions", form, headers)
    assert status == 400 and assert_openai_error(json.loads(body))["param"] == "model"
    form = b'--XX\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--XX--\r\n'
    status, _, body = raw(gw.port, "POST", "/audio/transcriptions", form, headers)
    assert status == 400 and assert_openai_error(json.loads(body))["code"] == "missing_file"
    status, _, body = raw(gw.port, "POST", "/v1/audio/transcriptions", form[:30], headers)
    assert status == 400 and assert_openai_error(json.loads(body))["code"] == "invalid_multipart"
    status, _, body = raw(
        gw.port, "POST", "/v1/audio/translations", b"{}", {"content-type": "application/json"}
    )
    assert (
        status == 400 and "multipart/form-data" in assert_openai_error(json.loads(body))["message"]
    )
    form = form.replace(b"whisper", b"nobody")
    status, _, body = raw(gw.port, "POST", "/v1/audio/transcriptions", form, headers)
    assert status == 404


def _read_answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def test_30mb_upload_refused_with_413_before_it_is_read(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [openai_entry("whisper", upstream)]})
    head = (
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: x\r\n"
        b"content-type: multipart/form-data; boundary=XX\r\ncontent-length: %d\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    sock.sendall(head % (30 * 1024 * 1024) + b"--XX\r\n")  # the body is never sent
    answer = _read_answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    err = assert_openai_error(json.loads(answer.split(b"\r\n\r\n", 1)[1]))
    assert "max_audio_upload_bytes" in err["message"]
    # Undeclared (chunked): refused once what came passes the limit, not at the end.
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    sock.sendall(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: x\r\n"
        b"content-type: multipart/form-data; boundary=XX\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    piece = b"%x\r\n%s\r\n" % (1024 * 1024, b"\0" * 1024 * 1024)
    try:
        for _ in range(26):  # past 25 MB, and the body's end never comes
            sock.sendall(piece)
    except OSError:
        pass  # the gateway closed the connection after its 413
    answer = _read_answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # The SDK (whole body sent before reading) gets the 413 too; nothing is kept.
    before = gw.rss_kib()
    c = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=60)
    with pytest.raises(openai.APIStatusError) as e:
        c.audio.transcriptions.create(model="whisper", file=("big.wav", b"\0" * (30 << 20)))
    assert e.value.status_code == 413
    assert gw.rss_kib() - before < 20 * 1024
    assert upstream.count() == 0


def test_max_audio_upload_bytes_is_configurable_and_checked(gateway: GatewayFactory) -> None:
    gw = gateway(
        {
            "model_list": [mock_entry("whisper")],
            "general_settings": {"max_audio_upload_bytes": 1000},
        }
    )
    c = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=30)
    assert c.audio.transcriptions.create(model="whisper", file=("a.wav", wav(0.01))).text
    # The SDK sends its whole body before it reads: it still gets the 413, not a reset.
    with pytest.raises(openai.APIStatusError) as e:
        c.audio.transcriptions.create(model="whisper", file=("a.wav", wav(1.0)))
    assert e.value.status_code == 413
    assert "max_audio_upload_bytes" in str(e.value)
    # And the gateway goes on serving.
    assert c.audio.transcriptions.create(model="whisper", file=("a.wav", wav(0.01))).text


def _form(alias: str, files: list[tuple[str, str, bytes]], **fields: str) -> bytes:
    out = b""
    for name, value in {"model": alias, **fields}.items():
        out += b'--BND\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (
            name.encode(),
            value.encode(),
        )
    for name, filename, data in files:
        out += (
            b'--BND\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n%s\r\n"
        ) % (name.encode(), filename.encode(), data)
    return out + b"--BND--\r\n"


@pytest.mark.parametrize(
    ("path", "files", "fields"),
    [
        ("/audio/translations", [("file", "a.wav", AUDIO)], {}),
        (
            "/images/edits",
            [("image[]", "a.png", png(b"a")), ("image[]", "b.png", png(b"b"))],
            {"prompt": "hat"},
        ),
        ("/images/variations", [("image", "a.png", png(b"a"))], {"n": "2"}),
    ],
)
def test_each_upload_endpoint_retries_then_falls_back_with_the_whole_form(
    gateway: GatewayFactory,
    upstream: FakeUpstream,
    upstream2: FakeUpstream,
    path: str,
    files: list[tuple[str, str, bytes]],
    fields: dict[str, str],
) -> None:
    upstream.set_default(Error(502))
    upstream2.enqueue(http_answer(b'{"text": "ok", "data": []}'))
    gw = gateway(
        {
            "model_list": [openai_entry("up", upstream), openai_entry("b", upstream2, model="m2")],
            "general_settings": {"num_retries": 1, "fallbacks": [{"up": ["b"]}]},
        }
    )
    form = _form("up", files, **fields)
    status, hdrs, body = raw(
        gw.port, "POST", path, form, {"content-type": "multipart/form-data; boundary=BND"}
    )
    assert status == 200, body
    assert hdrs["x-gatewayd-fallback"] == "b"
    assert [r.body for r in upstream.requests] == [with_model(form, "up", "up-model")] * 2
    assert upstream2.last_request.body == with_model(form, "up", "m2")
    assert upstream2.last_request.bare_path == "/v1" + path


def test_streamed_transcript_from_an_upstream_is_relayed_as_sse(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    events = (
        b'data: {"type":"transcript.text.delta","delta":"Hello"}\n\n'
        b'data: {"type":"transcript.text.delta","delta":" world"}\n\n'
        b'data: {"type":"transcript.text.done","text":"Hello world"}\n\n'
    )
    upstream.enqueue(http_answer(events, "text/event-stream", chunked=True))
    gw = gateway({"model_list": [openai_entry("whisper", upstream)]})
    c = openai.OpenAI(base_url=gw.base_url, api_key="none", max_retries=0, timeout=30)
    got = list(
        c.audio.transcriptions.create(
            model="whisper", file=("a.wav", AUDIO, "audio/wav"), stream=True
        )
    )
    assert [e.type for e in got] == [
        "transcript.text.delta",
        "transcript.text.delta",
        "transcript.text.done",
    ]
    assert b'name="stream"\r\n\r\ntrue' in upstream.last_request.body


def test_transcription_retried_on_the_alias_second_deployment_resends_the_file(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [
                openai_entry("whisper", upstream, model="w-a"),
                openai_entry("whisper", upstream2, model="w-b"),
            ],
            "general_settings": {"num_retries": 1},
        }
    )
    # Whichever deployment is tried first fails; the retry goes to the other one.
    first: list[str] = []

    def answer_second(name: str) -> Any:
        def behaviour(_: Any) -> Any:
            first.append(name)
            if len(first) == 1:
                return Error(500)
            return http_answer(b'{"text": "second"}')

        return behaviour

    upstream.set_default(answer_second("a"))
    upstream2.set_default(answer_second("b"))
    client = Captured(gw.base_url)
    got = client.sdk.audio.transcriptions.create(model="whisper", file=("s.wav", AUDIO))
    assert got.text == "second"
    assert sorted(first) == ["a", "b"]
    sent = client.bodies[0]
    (a,) = upstream.requests
    (b,) = upstream2.requests
    assert a.body == with_model(sent, "whisper", "w-a")
    assert b.body == with_model(sent, "whisper", "w-b")
    assert AUDIO in a.body and AUDIO in b.body


def test_an_unauthenticated_upload_learns_401_not_413(gateway: GatewayFactory) -> None:
    gw = gateway(
        {
            "model_list": [mock_entry("whisper")],
            "general_settings": {
                "master_key": "sk-master-0123456789",
                "max_audio_upload_bytes": 1000,
            },
        }
    )
    big = ("big.wav", b"\0" * 5000)
    stranger = openai.OpenAI(base_url=gw.base_url, api_key="wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        stranger.audio.transcriptions.create(model="whisper", file=big)
    owner = openai.OpenAI(
        base_url=gw.base_url, api_key="sk-master-0123456789", max_retries=0, timeout=30
    )
    with pytest.raises(openai.APIStatusError) as e:
        owner.audio.transcriptions.create(model="whisper", file=big)
    assert e.value.status_code == 413
