"""Wildcard aliases with discovery end to end, against fakes of each listing API: an
OpenAI-compatible server (``/v1/models``), Ollama (``/api/tags``) and Docker Model Runner
(``/engines/v1/models``). ``/v1/models`` shows what they list (never the pattern); a
listed model is routed with its name rewritten; an unknown one is a 404 with no
upstream call."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import GatewayFactory, sdk
from test_e2e_streaming import wait_for

from gatewayd.testing import FakeUpstream, RawResponse, Reply
from gatewayd.testing.behaviours import Behaviour, RecordedRequest

TAGS = {"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 1}]}


def ollama_behaviour(record: RecordedRequest) -> Behaviour:
    """Ollama's native listing at /api/tags; its OpenAI API under /v1."""
    if record.bare_path == "/api/tags":
        body = json.dumps(TAGS).encode()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        return RawResponse(head % len(body) + body)
    return Reply()


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    with (
        FakeUpstream(models=["meta-llama/Llama-3.1-8B"], content="from vllm") as vllm,
        FakeUpstream(default=ollama_behaviour, content="from ollama") as ollama,
        FakeUpstream(prefix="/engines/v1", models=["ai/smollm2"], content="from dmr") as dmr,
    ):
        yield {"vllm": vllm, "ollama": ollama, "dmr": dmr}


def models(url: str) -> list[str]:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as r:
        return [m["id"] for m in json.loads(r.read())["data"]]


def chat(url: str, model: str) -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
    req = urllib.request.Request(
        f"{url}/v1/chat/completions",
        json.dumps(body).encode(),
        {"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_discovered_models_are_listed_and_routed(
    gateway: GatewayFactory, fakes: dict[str, FakeUpstream]
) -> None:
    vllm, ollama, dmr = fakes["vllm"], fakes["ollama"], fakes["dmr"]
    config = {
        "model_list": [
            {
                "model_name": "vllm/*",
                "params": {"model": "hosted_vllm/*", "api_base": vllm.url, "discover": True},
            },
            {
                "model_name": "ollama/*",
                "params": {"model": "ollama/*", "api_base": ollama.origin, "discover": True},
            },
            {
                "model_name": "dmr/*",
                "params": {
                    "model": "docker_model_runner/*",
                    "api_base": dmr.url,
                    "discover": True,
                    "discover_interval": 0.5,
                },
            },
            {"model_name": "fixed", "params": {"model": "mock/fixed"}},
        ],
        "general_settings": {"discover_interval": 0.5},
    }
    gw = gateway(config)
    wanted = {"vllm/meta-llama/Llama-3.1-8B", "ollama/llama3.2:latest", "dmr/ai/smollm2", "fixed"}
    assert wait_for(lambda: wanted <= set(models(gw.url)), 10.0), models(gw.url)
    assert not any("*" in m for m in models(gw.url))
    assert ollama.count("/api/tags") >= 1 and dmr.count("/engines/v1/models") >= 1

    client = sdk(gw.base_url)
    for name, fake, upstream in (
        ("vllm/meta-llama/Llama-3.1-8B", vllm, "meta-llama/Llama-3.1-8B"),
        ("ollama/llama3.2", ollama, "llama3.2"),  # Ollama's :latest
        ("dmr/ai/smollm2", dmr, "ai/smollm2"),
    ):
        answer = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content == f"from {name.split('/')[0]}"
        assert fake.last_request.json()["model"] == upstream

    chats = ollama.count("/chat/completions")
    status, body = chat(gw.url, "ollama/not-pulled")
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert ollama.count("/chat/completions") == chats  # no upstream call
    status, body = chat(gw.url, "ollama/*")
    assert status == 404


def test_a_reload_lists_again_and_starts_health_checks(
    gateway: GatewayFactory, fakes: dict[str, FakeUpstream]
) -> None:
    vllm = fakes["vllm"]
    params: dict[str, Any] = {"model": "hosted_vllm/*", "api_base": vllm.url}
    entry = {"model_name": "vllm/*", "params": params}
    gw = gateway({"model_list": [entry]})
    assert "vllm/*" not in models(gw.url)  # no discovery: nothing listed, never the pattern
    listings = vllm.count("/models")
    params["discover"] = True
    gw.write_config({"model_list": [entry], "general_settings": {"health_check_interval": 0.3}})
    gw.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "vllm/meta-llama/Llama-3.1-8B" in models(gw.url), 10.0)
    # the listing at reload, then the probes every 0.3 s (the same GET)
    assert wait_for(lambda: vllm.count("/models") >= listings + 3, 10.0)
