"""In process: which deployment serves what (``api_endpoints``, ``model_info.mode``,
provider defaults), the unit prices, ``max_audio_upload_bytes``, the URLs of the new
endpoints per provider, the signed object ids and the multipart spool."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_provider_requests import build

from gatewayd.config import ConfigError, parse_config
from gatewayd.config.endpoints import API_ENDPOINTS
from gatewayd.config.model import GeneralSettings
from gatewayd.providers.base import Endpoint, ProviderRequest
from gatewayd.providers.capabilities import serves
from gatewayd.web.object_ids import ObjectIds
from gatewayd.web.upload import UploadSpool, upload_endpoint


def entry(model: str, info: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"model_name": "a", "params": {"model": model, "api_key": "k", **params}}
    if info is not None:
        e["model_info"] = info
    return e


def one(e: dict[str, Any], **general: Any) -> Any:
    doc = {"model_list": [e], "general_settings": general}
    return parse_config(json.dumps(doc), environ={})


def test_defaults_per_provider() -> None:
    openai = one(entry("openai/gpt-4o")).deployments[0]
    assert all(serves(openai, e) for e in Endpoint)
    claude = one(entry("anthropic/claude")).deployments[0]
    assert serves(claude, Endpoint.CHAT) and serves(claude, Endpoint.MESSAGES)
    assert not serves(claude, Endpoint.SPEECH) and not serves(claude, Endpoint.RERANK)
    for prefix in ("cohere", "jina_ai"):
        d = one(entry(f"{prefix}/rerank-x")).deployments[0]
        assert serves(d, Endpoint.RERANK) and not serves(d, Endpoint.CHAT)
    assert serves(one(entry("mock/m")).deployments[0], Endpoint.BATCHES)


def test_api_endpoints_and_mode() -> None:
    d = one(entry("openai/x", api_endpoints=["speech", "transcriptions"])).deployments[0]
    assert d.api_endpoints == frozenset({"speech", "transcriptions"})
    d = one(entry("openai/x", api_endpoints="rerank")).deployments[0]
    assert d.api_endpoints == frozenset({"rerank"})
    d = one(entry("openai/x", {"mode": "audio_transcription"})).deployments[0]
    assert serves(d, Endpoint.TRANSLATIONS) and not serves(d, Endpoint.CHAT)
    d = one(entry("openai/x", {"mode": "chat"})).deployments[0]
    assert serves(d, Endpoint.CHAT) and not serves(d, Endpoint.IMAGES)
    # params win over model_info.mode
    d = one(entry("openai/x", {"mode": "chat"}, api_endpoints=["images"])).deployments[0]
    assert d.api_endpoints == frozenset({"images"})


@pytest.mark.parametrize(
    ("e", "where", "why"),
    [
        (entry("openai/x", api_endpoints=["chat", "audio"]), "params.api_endpoints[1]", "audio"),
        (entry("openai/x", api_endpoints=[]), "params.api_endpoints", "expected a list"),
        (entry("openai/x", api_endpoints=7), "params.api_endpoints", "got"),
        (entry("openai/x", {"mode": "telepathy"}), "model_info.mode", "telepathy"),
        (entry("openai/x", input_cost_per_second=-1), "input_cost_per_second", ""),
    ],
)
def test_bad_endpoint_config_names_the_key(e: dict[str, Any], where: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        one(e)
    assert where in str(err.value) and why in str(err.value)
    if where.endswith("[1]"):  # the message lists what is allowed
        assert all(name in str(err.value) for name in API_ENDPOINTS)


def test_unit_prices_and_upload_limit() -> None:
    d = one(
        entry("openai/x", {"output_cost_per_image": 0.04}, input_cost_per_character=1e-5)
    ).deployments[0]
    assert dict(d.unit_prices) == {"input_cost_per_character": 1e-5, "output_cost_per_image": 0.04}
    assert one(entry("openai/x")).general.max_audio_upload_bytes == 25 * 1024 * 1024
    assert one(entry("openai/x"), max_audio_upload_bytes=10).general.max_audio_upload_bytes == 10
    with pytest.raises(ConfigError) as err:
        one(entry("openai/x"), max_audio_upload_bytes=0)
    assert "general_settings.max_audio_upload_bytes" in str(err.value)


def test_urls_per_provider() -> None:
    url, _, body = build({"model": "openai/tts-1"}, {"model": "a", "input": "hi"}, Endpoint.SPEECH)
    assert url == "https://api.openai.com/v1/audio/speech"
    assert json.loads(body)["model"] == "tts-1"
    azure = {"model": "azure/my-tts", "api_base": "https://r.openai.azure.com", "api_version": "v"}
    url, _, _ = build(azure, {"model": "a", "input": "hi"}, Endpoint.SPEECH)
    assert url == "https://r.openai.azure.com/openai/deployments/my-tts/audio/speech?api-version=v"
    url, _, _ = build(azure, {"model": "a", "prompt": "p"}, Endpoint.IMAGES)
    assert url.endswith("/openai/deployments/my-tts/images/generations?api-version=v")
    url, _, _ = build({"model": "cohere/rerank-v3.5"}, {"model": "a"}, Endpoint.RERANK)
    assert url == "https://api.cohere.com/v2/rerank"
    url, _, _ = build({"model": "jina_ai/jina-reranker"}, {"model": "a"}, Endpoint.RERANK)
    assert url == "https://api.jina.ai/v1/rerank"
    url, _, _ = build({"model": "vllm/bge"}, {"model": "a"}, Endpoint.RERANK)
    assert url == "http://localhost:8000/v1/rerank"


def test_object_ids_are_signed() -> None:
    ids, warning = ObjectIds.from_settings(GeneralSettings(master_key="sk-m"))
    assert warning is None
    token = ids.sign("file", "alias", "openai/x@h", "file-up", "team-a")
    ref = ids.open("file", token)
    assert ref is not None and (ref.alias, ref.deployment, ref.upstream_id, ref.owner) == (
        "alias",
        "openai/x@h",
        "file-up",
        "team-a",
    )
    assert ids.open("batch", token) is None  # a file id is no batch id
    other, _ = ObjectIds.from_settings(GeneralSettings(object_id_secret="s"))
    assert other.open("file", token) is None  # another install's secret
    payload, mac = token.split(".")
    assert ids.open("file", payload[:-2] + "xx." + mac) is None
    assert ObjectIds.from_settings(GeneralSettings())[1] is not None  # per process: warned


def test_spool_relays_the_form_with_model_replaced() -> None:
    form = (
        b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nalias\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + b"\x00\x01" * 5000 + b"\r\n--b--\r\n"
    )
    spool = UploadSpool("multipart/form-data; boundary=b", 1 << 20)
    for i in range(0, len(form), 7):  # reads split anywhere
        spool.feed(form[i : i + 7])
    spool.finish()
    assert spool.error is None and spool.fields() == {"model": "alias"}
    assert spool.body("up") == form.replace(b"\r\n\r\nalias\r\n", b"\r\n\r\nup\r\n")
    assert b'name="model"' not in spool.body(None)
    small = UploadSpool("multipart/form-data; boundary=b", 100)
    small.feed(form)
    assert small.too_large
    assert upload_endpoint(b"/v1/audio/transcriptions?x=1") is Endpoint.TRANSCRIPTIONS
    assert upload_endpoint(b"/images/edits/") is Endpoint.IMAGE_EDITS
    assert upload_endpoint(b"/v1/chat/completions") is None
    assert ProviderRequest(Endpoint.FILES, {}).method == "POST"


def test_object_urls_and_bodies() -> None:
    from test_provider_requests import provider

    azure = provider(
        {"model": "azure/dep", "api_base": "https://r.openai.azure.com", "api_version": "v"}
    )
    listing = ProviderRequest(Endpoint.FILES, {}, method="GET", path="files?limit=2")
    url, headers, body = azure.build_request(listing)
    assert url == b"https://r.openai.azure.com/openai/files?limit=2&api-version=v"
    assert body == b"" and not headers.hasHeader(b"content-type")
    openai = provider({"model": "openai/gpt-4o"})
    create = ProviderRequest(
        Endpoint.BATCHES, {"model": "alias", "input_file_id": "file-1"}, path="batches"
    )
    url, _, body = openai.build_request(create)
    assert url == b"https://api.openai.com/v1/batches"
    assert json.loads(body) == {"input_file_id": "file-1"}  # no model upstream
    content = ProviderRequest(Endpoint.FILES, {}, method="GET", path="files/file-1/content")
    assert openai.build_request(content)[0] == b"https://api.openai.com/v1/files/file-1/content"
    # The endpoint's own URL is still cached and right after an object's path.
    speech = ProviderRequest(Endpoint.SPEECH, {"model": "a", "input": "x"})
    assert openai.build_request(speech)[0] == b"https://api.openai.com/v1/audio/speech"


def test_span_operation_names() -> None:
    from gatewayd.tracing.genai import operation_for

    assert operation_for(Endpoint.SPEECH.value) == "generate_content"
    assert operation_for(Endpoint.IMAGE_EDITS.value) == "generate_content"
    assert operation_for(Endpoint.RERANK.value) == "rerank"
    assert operation_for(Endpoint.CHAT.value) == "chat"
    assert operation_for(Endpoint.COMPLETIONS.value) == "text_completion"


def test_object_owners_are_shared_through_the_state_store() -> None:
    from twisted.internet.task import Clock

    from gatewayd.state.memory import MemoryStore
    from gatewayd.web.object_ids import OWNER_TTL, OwnedObjects

    clock = Clock()
    store = MemoryStore(clock)
    here, there = OwnedObjects(store), OwnedObjects(store)  # two workers, one store
    here.note("dep", "file-1", "team-a")
    assert there.owner("dep", "file-1") is None
    done: list[object] = []
    there.learn("dep", ["file-1", "file-2"]).addCallback(done.append)
    assert done == [None]
    assert there.owner("dep", "file-1") == "team-a"
    assert there.owner("dep", "file-2") is None
    clock.advance(OWNER_TTL + 1)  # forgotten by the store in time
    later = OwnedObjects(store)
    later.learn("dep", ["file-1"])
    assert later.owner("dep", "file-1") is None
    # Without a store, only what this process saw.
    alone = OwnedObjects()
    alone.note("dep", "file-3", "team-b")
    assert alone.owner("dep", "file-3") == "team-b"


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from(["file", "image[]", "language", "prompt", "mask"]),
            st.booleans(),
            st.binary(max_size=3000),
        ),
        min_size=1,
        max_size=5,
    ),
    cuts=st.lists(st.integers(min_value=1, max_value=4000), max_size=8),
)
def test_any_form_cut_anywhere_is_relayed_whole(
    parts: list[tuple[str, bool, bytes]], cuts: list[int]
) -> None:
    boundary = b"----gw" + b"7" * 20
    form = b'--%s\r\nContent-Disposition: form-data; name="model"\r\n\r\nalias\r\n' % boundary
    for name, is_file, data in parts:
        if not is_file:
            data = data.replace(b"\r", b"").replace(b"\n", b"")[:100]
        head = f'Content-Disposition: form-data; name="{name}"'
        head += '; filename="f.bin"\r\nContent-Type: application/octet-stream' if is_file else ""
        form += b"--%s\r\n%s\r\n\r\n%s\r\n" % (boundary, head.encode(), data)
    form += b"--%s--\r\n" % boundary
    spool = UploadSpool("multipart/form-data; boundary=" + boundary.decode(), 1 << 24)
    at = 0
    for cut in [*sorted(set(cuts)), len(form)]:
        spool.feed(form[at:cut])
        at = max(at, cut)
    spool.feed(form[at:])
    spool.finish()
    assert spool.error is None
    assert spool.body("up") == form.replace(b"\r\n\r\nalias\r\n", b"\r\n\r\nup\r\n", 1)
    assert spool.body("alias") == form
