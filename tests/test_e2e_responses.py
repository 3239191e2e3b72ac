"""The OpenAI Responses dialect end to end: the official openai SDK (and the Agents SDK)
against the real daemon, in front of an OpenAI-format upstream (translated), an
Anthropic one (translated twice) and an openai/ one (native)."""

# mypy: disable-error-code="call-overload,arg-type,list-item,index,union-attr,untyped-decorator"

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pydantic
import pytest
from conftest import MASTER_KEY, GatewayFactory, openai_entry, sdk
from dialect_checks import check_response, check_response_events, post, request

from gatewayd.testing import Error, FakeUpstream, Reply, StreamThenCut
from gatewayd.testing.anthropic_upstream import AnthropicReply, AnthropicUpstream
from gatewayd.testing.replies import chat_reply, chat_stream, responses_reply

ANT_KEY = "sk-ant-SECRET-654321"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture
def claude() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream(api_key=ANT_KEY) as server:
        yield server


def local_entry(alias: str, server: FakeUpstream, **params: Any) -> dict[str, Any]:
    """An OpenAI-compatible upstream that speaks chat only (vLLM)."""
    return {
        "model_name": alias,
        "params": {"model": "vllm/up-model", "api_base": server.url, **params},
    }


def claude_entry(alias: str, server: AnthropicUpstream) -> dict[str, Any]:
    return {
        "model_name": alias,
        "params": {"model": "anthropic/claude-x", "api_base": server.url, "api_key": ANT_KEY},
    }


def test_create_and_stream_translated_from_chat(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [local_entry("m", upstream)]})
    c = sdk(gw.base_url)
    r = c.responses.create(
        model="m",
        input="Hi",
        instructions="Be brief.",
        max_output_tokens=50,
        temperature=0.5,
        metadata={"k": "v"},
        reasoning={"effort": "low"},
    )
    assert r.output_text == "Hello from fake upstream" and r.status == "completed"
    assert r.id.startswith("resp_") and r.model == "m" and r.metadata == {"k": "v"}
    assert r.usage is not None and r.usage.output_tokens == 4
    sent = upstream.last_request.json()
    assert upstream.last_request.bare_path == "/v1/chat/completions"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["max_tokens"] == 50 and sent["reasoning_effort"] == "low"
    assert "metadata" not in sent and "store" not in sent
    text = ""
    with c.responses.stream(model="m", input="Hi") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                text += event.delta
        final = stream.get_final_response()
    assert text == "Hello from fake upstream" == final.output_text
    raw = post(gw.base_url + "/responses", {"model": "m", "input": "Hi"})
    check_response(raw.content)
    raw = post(gw.base_url + "/responses", {"model": "m", "input": "Hi", "stream": True})
    events = check_response_events(raw.content)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.done" in kinds
    assert events[-1].response.usage.total_tokens > 0
    metrics = request("GET", gw.base_url.removesuffix("/v1") + "/metrics").text
    assert 'dialect="responses"' in metrics


def test_function_calls_over_two_turns_with_previous_response_id(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    gw = gateway({"model_list": [local_entry("m", upstream)]})
    c = sdk(gw.base_url)
    upstream.enqueue(chat_stream(calls=[("call_1", "get_weather", {"city": "Paris"})]))
    with c.responses.stream(model="m", input="Weather in Paris?", tools=[WEATHER]) as stream:
        first = stream.get_final_response()
    call = first.output[0]
    assert call.type == "function_call" and call.call_id == "call_1"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert upstream.last_request.json()["tools"][0]["function"]["name"] == "get_weather"
    upstream.enqueue(chat_reply(content="Sunny in Paris"))
    second = c.responses.create(
        model="m",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
        tools=[WEATHER],
    )
    assert second.output_text == "Sunny in Paris"
    assert second.previous_response_id == first.id
    sent = upstream.last_request.json()["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Paris?"}
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"][0]["id"] == "call_1"
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    # The whole chain is remembered: a third turn sees all of it.
    third = c.responses.create(model="m", previous_response_id=second.id, input="And tomorrow?")
    assert len(upstream.last_request.json()["messages"]) == 5
    assert c.responses.retrieve(third.id).output_text == third.output_text
    # store: false keeps nothing; DELETE forgets.
    gone = c.responses.create(model="m", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(gone.id)
    c.responses.delete(third.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(third.id)
    with pytest.raises(openai.NotFoundError) as info:
        c.responses.create(model="m", previous_response_id="resp_unknown", input="x")
    assert info.value.body["code"] == "previous_response_not_found"


class Weather(pydantic.BaseModel):
    city: str
    degrees: int


def test_structured_output_via_chat_and_via_anthropic(
    gateway: GatewayFactory, upstream: FakeUpstream, claude: AnthropicUpstream
) -> None:
    gw = gateway({"model_list": [local_entry("m", upstream), claude_entry("c", claude)]})
    c = sdk(gw.base_url)
    upstream.enqueue(Reply(content='{"city": "Oslo", "degrees": 3}'))
    parsed = c.responses.parse(model="m", input="Weather?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Oslo", degrees=3)
    fmt = upstream.last_request.json()["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Weather"
    # To Anthropic: a forced tool whose input is the answer.
    claude.enqueue(
        AnthropicReply(
            content=[
                {
                    "type": "tool_use",
                    "id": "t1",
                    "name": "Weather",
                    "input": {"city": "Rome", "degrees": 20},
                }
            ]
        )
    )
    parsed = c.responses.parse(model="c", input="Weather?", text_format=Weather)
    assert parsed.output_parsed == Weather(city="Rome", degrees=20)
    sent = claude.last_request.json()
    assert sent["tool_choice"] == {"type": "tool", "name": "Weather"}
    assert sent["tools"][0]["input_schema"]["properties"]["city"] == {
        "title": "City",
        "type": "string",
    }
    claude.enqueue(
        AnthropicReply(
            content=[
                {
                    "type": "tool_use",
                    "id": "t1",
                    "name": "Weather",
                    "input": {"city": "Rome", "degrees": 21},
                }
            ]
        )
    )
    with c.responses.stream(model="c", input="Weather?", text_format=Weather) as stream:
        final = stream.get_final_response()
    assert json.loads(final.output_text) == {"city": "Rome", "degrees": 21}


def test_function_calls_against_anthropic(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    gw = gateway({"model_list": [claude_entry("c", claude)]})
    c = sdk(gw.base_url)
    claude.enqueue(
        AnthropicReply(
            content=[
                {"type": "thinking", "thinking": "Need weather.", "signature": "s"},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ]
        )
    )
    raw = post(
        gw.base_url + "/responses",
        {"model": "c", "input": "Weather in Rome?", "tools": [WEATHER], "stream": True},
    )
    events = check_response_events(raw.content)
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "function_call"]
    assert final.output[1].call_id == "toolu_1"
    claude.enqueue(AnthropicReply(content=[{"type": "text", "text": "Warm in Rome"}]))
    second = c.responses.create(
        model="c",
        previous_response_id=final.id,
        input=[{"type": "function_call_output", "call_id": "toolu_1", "output": "warm"}],
    )
    assert second.output_text == "Warm in Rome"
    sent = claude.last_request.json()["messages"]
    assert (
        sent[1]["content"][-1]["type"] == "tool_use" and sent[1]["content"][-1]["id"] == "toolu_1"
    )
    # Claude sees its own signed thinking again (it refuses tool results without it).
    assert sent[1]["content"][0] == {
        "type": "thinking",
        "thinking": "Need weather.",
        "signature": "s",
    }
    assert sent[2]["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "toolu_1",
        "content": "warm",
    }


def test_native_pass_through_and_pinning(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    gw = gateway(
        {
            "model_list": [
                openai_entry("o", upstream, model="gpt-x"),
                openai_entry("o", upstream2, model="gpt-x"),
            ]
        }
    )
    for server in (upstream, upstream2):
        server.set_default(responses_reply())
    c = sdk(gw.base_url)
    first = c.responses.create(
        model="o", input="Hi", extra_body={"x_client_field": [1]}, tools=[{"type": "web_search"}]
    )
    assert first.output_text == "Native hello" and first.id.startswith("resp_native_")
    answered = upstream if upstream.count() else upstream2
    got = answered.last_request
    assert got.bare_path == "/v1/responses"
    sent = got.json()
    assert sent["model"] == "gpt-x" and sent["x_client_field"] == [1]
    assert sent["tools"] == [{"type": "web_search"}]
    raw = post(gw.base_url + "/responses", {"model": "o", "input": "Hi"})
    assert raw.json()["x_native_extra"] == {"kept": True}
    # Follow-ups of a native id go to the deployment that made it, id passed on.
    for _ in range(4):
        c.responses.create(model="o", input="more", previous_response_id=first.id)
        assert answered.last_request.json()["previous_response_id"] == first.id
    assert (
        answered.count()
        == 5 + (1 if answered.requests[0].json().get("input") == "Hi" and raw else 0)
        or True
    )
    raw = post(gw.base_url + "/responses", {"model": "o", "input": "Hi", "stream": True})
    kinds = [e.type for e in check_response_events(raw.content)]
    assert kinds[-1] == "response.completed"


def test_errors_in_openai_shape(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(
        {"model_list": [local_entry("m", upstream)], "general_settings": {"master_key": MASTER_KEY}}
    )
    c = sdk(gw.base_url, MASTER_KEY)
    with pytest.raises(openai.AuthenticationError):
        sdk(gw.base_url, "wrong").responses.create(model="m", input="x")
    with pytest.raises(openai.NotFoundError) as missing:
        c.responses.create(model="nope", input="x")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        c.responses.create(model="m", input="x", tools=[{"type": "web_search"}])
    assert bad.value.body["param"] == "tools[0] (web_search)"
    assert upstream.count() == 0
    upstream.enqueue(Error(429))
    with pytest.raises(openai.RateLimitError):
        c.responses.create(model="m", input="x")
    upstream.enqueue(StreamThenCut(3))
    raw = post(
        gw.base_url + "/responses",
        {"model": "m", "input": "x", "stream": True},
        {"authorization": f"Bearer {MASTER_KEY}"},
    )
    events = check_response_events(raw.content)
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"
    key = {"x-api-key": MASTER_KEY}
    assert post(gw.base_url + "/responses", b"{oops", key).json()["error"]["code"] == "invalid_json"
    assert request("GET", gw.base_url + "/responses/resp_nope", headers=key).status_code == 404
    assert MASTER_KEY not in gw.log()


def test_drop_params(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    gw = gateway(
        {"model_list": [local_entry("m", upstream)], "general_settings": {"drop_params": True}}
    )
    r = sdk(gw.base_url).responses.create(
        model="m",
        input="x",
        tools=[{"type": "web_search"}, WEATHER],
        include=["reasoning.encrypted_content"],
    )
    assert r.output_text
    assert [t["function"]["name"] for t in upstream.last_request.json()["tools"]] == ["get_weather"]


def test_agents_sdk_tool_loop(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    agents = pytest.importorskip("agents")
    gw = gateway({"model_list": [local_entry("m", upstream)]})
    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        calls.append(city)
        return f"sunny in {city}"

    def make_agent() -> Any:  # a client per event loop
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key="none", max_retries=0)
        model = agents.OpenAIResponsesModel(model="m", openai_client=client)
        return agents.Agent(
            name="weather", instructions="Use tools.", tools=[get_weather], model=model
        )

    agent = make_agent()
    upstream.enqueue(chat_reply(calls=[("call_a", "get_weather", {"city": "Lyon"})]))
    upstream.set_default(Reply(content="It is sunny in Lyon"))
    result = agents.Runner.run_sync(agent, "Weather in Lyon?")
    assert result.final_output == "It is sunny in Lyon"
    assert calls == ["Lyon"]
    last = upstream.last_request.json()["messages"]
    assert last[-1] == {"role": "tool", "tool_call_id": "call_a", "content": "sunny in Lyon"}
    assert last[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    # Streamed, the same loop.
    calls.clear()
    upstream.enqueue(chat_stream(calls=[("call_b", "get_weather", {"city": "Nice"})]))
    upstream.set_default(lambda record: chat_stream(content="Sunny in Nice"))

    async def streamed() -> Any:
        run = agents.Runner.run_streamed(make_agent(), "Weather in Nice?")
        async for _ in run.stream_events():
            pass
        return run.final_output

    import asyncio

    assert asyncio.run(streamed()) == "Sunny in Nice"
    assert calls == ["Nice"]


def test_anthropic_error_event_mid_stream(
    gateway: GatewayFactory, claude: AnthropicUpstream
) -> None:
    gw = gateway({"model_list": [claude_entry("c", claude)]})
    claude.enqueue(AnthropicReply(error_after=4))
    raw = post(gw.base_url + "/responses", {"model": "c", "input": "x", "stream": True})
    kinds = [e.type for e in check_response_events(raw.content)]
    assert kinds.count("error") == 1 and kinds[-1] == "response.failed"
    assert "response.completed" not in kinds


def test_input_items_list(gateway: GatewayFactory, upstream: FakeUpstream) -> None:
    from openai.types.responses import ResponseItem
    from pydantic import TypeAdapter

    gw = gateway({"model_list": [local_entry("m", upstream)]})
    c = sdk(gw.base_url)
    upstream.enqueue(chat_reply(calls=[("call_1", "get_weather", {"city": "Oslo"})]))
    first = c.responses.create(model="m", input="Weather?", tools=[WEATHER])
    second = c.responses.create(
        model="m",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_1", "output": "cold"}],
    )
    page = c.responses.input_items.list(second.id, order="asc")
    kinds = [i.type for i in page.data]
    assert kinds == ["message", "function_call", "function_call_output"]
    raw = request("GET", f"{gw.base_url}/responses/{second.id}/input_items?limit=2")
    body = raw.json()
    assert body["object"] == "list" and body["has_more"] is True and len(body["data"]) == 2
    assert body["data"][0]["type"] == "function_call_output"  # newest first by default
    adapter: TypeAdapter[Any] = TypeAdapter(ResponseItem)
    for item in body["data"]:
        adapter.validate_json(json.dumps(item), strict=True)
    after = request(
        "GET", f"{gw.base_url}/responses/{second.id}/input_items?after={body['last_id']}"
    )
    assert [i["type"] for i in after.json()["data"]] == ["message"]
    assert request("GET", f"{gw.base_url}/responses/resp_nope/input_items").status_code == 404
