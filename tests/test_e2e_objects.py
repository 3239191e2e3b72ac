"""End to end: files and batches through the real daemon with the official openai SDK:
signed ids naming the deployment, ids inside answers handed out the same way, a key
seeing only its own objects; on the mock and on an OpenAI-format fake."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from conftest import MASTER_KEY, GatewayFactory, openai_entry
from test_e2e_api import assert_openai_error, raw
from test_e2e_endpoints import http_answer, mock_entry

from gatewayd.testing import Error, FakeUpstream

KEY_A = "sk-team-a-0123456789"
KEY_B = "sk-team-b-0123456789"


def sdk(gw: Any, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


BATCH_INPUT = "".join(
    json.dumps(
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "batcher", "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
    )
    + "\n"
    for i in range(3)
).encode()


def test_mock_files_and_a_batch_that_completes_per_key(gateway: GatewayFactory) -> None:
    gw = gateway(
        {
            "model_list": [mock_entry("batcher"), mock_entry("other")],
            "general_settings": {"master_key": MASTER_KEY},
            "keys": [{"key": KEY_A, "name": "team-a"}, {"key": KEY_B, "name": "team-b"}],
        }
    )
    a, b = sdk(gw, KEY_A), sdk(gw, KEY_B)
    head = {"x-gatewayd-model": "batcher"}
    created = a.files.create(file=("in.jsonl", BATCH_INPUT), purpose="batch", extra_headers=head)
    assert created.id.startswith("file-gw") and created.bytes == len(BATCH_INPUT)
    assert a.files.retrieve(created.id).filename == "in.jsonl"
    assert a.files.content(created.id).content == BATCH_INPUT
    assert [f.id for f in a.files.list(extra_headers=head)] == [created.id]
    # Another key: not found, and not listed.
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(created.id)
    assert list(b.files.list(extra_headers=head)) == []
    # The master key sees every object.
    assert sdk(gw, MASTER_KEY).files.retrieve(created.id).id == created.id
    # A forged id (another deployment, same upstream id): refused.
    forged = created.id[:-3] + ("AAA" if not created.id.endswith("AAA") else "BBB")
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(forged)

    batch = a.batches.create(
        input_file_id=created.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert batch.id.startswith("batch_gw") and batch.input_file_id == created.id
    assert batch.status == "validating"
    done = a.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts is not None
    assert done.request_counts.completed == 3
    assert done.output_file_id is not None and done.output_file_id.startswith("file-gw")
    lines = [json.loads(x) for x in a.files.content(done.output_file_id).text.splitlines()]
    assert [x["custom_id"] for x in lines] == ["req-0", "req-1", "req-2"]
    assert lines[0]["response"]["body"]["object"] == "chat.completion"
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(batch.id)
    assert [x.id for x in a.batches.list(extra_headers=head)] == [batch.id]
    assert list(b.batches.list(extra_headers=head)) == []
    second = a.batches.create(
        input_file_id=created.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    cancelled = a.batches.cancel(second.id)
    assert cancelled.id == second.id and cancelled.status == "cancelled"
    with pytest.raises(openai.NotFoundError):
        b.batches.cancel(second.id)
    assert a.files.delete(created.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(created.id)
    _, _, metrics = raw(gw.port, "GET", "/metrics")
    assert b'endpoint="batches",status="200"} ' in metrics


def test_files_and_batches_on_an_openai_fake_go_to_the_deployment_that_holds_them(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    def batch(status: str) -> bytes:
        return json.dumps(
            {
                "id": "batch_up1",
                "object": "batch",
                "status": status,
                "input_file_id": "file-up1",
                "output_file_id": "file-out1" if status == "completed" else None,
                "error_file_id": None,
            }
        ).encode()

    upstream2.enqueue(
        http_answer(json.dumps({"id": "file-up1", "object": "file", "bytes": 3}).encode()),
        http_answer(batch("validating")),
        http_answer(batch("completed")),
        http_answer(
            b'{"custom_id":"x","id":"batch_req_1"}\n{"custom_id":"y"}\n', "application/json"
        ),
    )
    gw = gateway(
        {
            "model_list": [
                openai_entry("chat", upstream, api_endpoints=["chat"]),
                openai_entry("batcher", upstream2, api_endpoints=["files", "batches"]),
            ]
        }
    )
    c = sdk(gw, "none")
    f = c.files.create(file=("in.jsonl", b"abc"), purpose="batch", extra_body={"model": "batcher"})
    sent = upstream2.requests[0]
    assert sent.bare_path == "/v1/files"
    assert b'name="model"' not in sent.body and b'name="purpose"\r\n\r\nbatch' in sent.body
    assert f.id.startswith("file-gw")
    b = c.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    sent = upstream2.requests[1]
    assert sent.bare_path == "/v1/batches"
    assert json.loads(sent.body) == {
        "input_file_id": "file-up1",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    assert b.input_file_id == f.id
    done = c.batches.retrieve(b.id)
    assert upstream2.requests[2].bare_path == "/v1/batches/batch_up1"
    assert done.output_file_id and done.output_file_id.startswith("file-gw")
    # A JSONL output comes back as the upstream sent it, whatever its Content-Type says.
    assert c.files.content(done.output_file_id).content == (
        b'{"custom_id":"x","id":"batch_req_1"}\n{"custom_id":"y"}\n'
    )
    assert upstream2.requests[3].bare_path == "/v1/files/file-out1/content"
    assert upstream.count() == 0
    status, _, body = raw(
        gw.port,
        "POST",
        "/v1/files",
        b"x",
        {"content-type": "multipart/form-data; boundary=Q", "x-gatewayd-model": "chat"},
    )
    assert status == 400
    status, _, body = raw(gw.port, "GET", "/v1/files", None, {"x-gatewayd-model": "chat"})
    assert status == 400 and assert_openai_error(json.loads(body))["code"] == (
        "endpoint_not_supported"
    )


def test_two_instances_sharing_redis_filter_lists_by_owner(
    gateway: GatewayFactory, upstream: FakeUpstream
) -> None:
    from gatewayd.testing.redis import RedisServer, redis_available

    if not redis_available():
        pytest.skip("redis-server not installed")
    listing = {
        "object": "list",
        "data": [
            {"id": "file-up1", "object": "file", "bytes": 3},
            {"id": "file-else", "object": "file", "bytes": 9},
        ],
        "has_more": False,
    }
    upstream.enqueue(
        http_answer(json.dumps({"id": "file-up1", "object": "file", "bytes": 3}).encode())
    )
    upstream.set_default(http_answer(json.dumps(listing).encode()))
    with RedisServer() as redis:
        config = {
            "model_list": [openai_entry("batcher", upstream)],
            "general_settings": {"state_store": redis.url, "object_id_secret": "shared-secret"},
            "keys": [{"key": KEY_A, "name": "team-a"}, {"key": KEY_B, "name": "team-b"}],
        }
        first, second = gateway(config), gateway(config)
        made = sdk(first, KEY_A).files.create(
            file=("in.jsonl", b"abc"), purpose="batch", extra_body={"model": "batcher"}
        )
        # The other instance knows the id (same secret) and the owner (through Redis).
        a_list = list(sdk(second, KEY_A).files.list(extra_query={"model": "batcher"}))
        assert [f.id for f in a_list] == [made.id]
        assert list(sdk(second, KEY_B).files.list(extra_query={"model": "batcher"})) == []
        upstream.enqueue(
            http_answer(json.dumps({"id": "file-up1", "object": "file", "bytes": 3}).encode())
        )
        assert sdk(second, KEY_A).files.retrieve(made.id).id == made.id
        assert upstream.last_request.bare_path == "/v1/files/file-up1"
        assert upstream.requests[1].bare_path == "/v1/files"
        assert "model=" not in upstream.requests[1].path


def test_a_list_over_several_deployments_is_merged_and_each_id_names_its_own(
    gateway: GatewayFactory, upstream: FakeUpstream, upstream2: FakeUpstream
) -> None:
    from gatewayd.config.model import GeneralSettings
    from gatewayd.web.object_ids import ObjectIds

    def listing(*ids: str) -> Any:
        data = [{"id": i, "object": "file", "bytes": 1} for i in ids]
        return http_answer(json.dumps({"object": "list", "data": data, "has_more": False}).encode())

    upstream.set_default(listing("file-a1", "file-a2"))
    upstream2.set_default(listing("file-b1"))
    gw = gateway(
        {
            "model_list": [
                openai_entry("store", upstream, api_endpoints=["files"]),
                openai_entry("store", upstream2, model="m2", api_endpoints=["files"]),
            ],
            "general_settings": {"master_key": MASTER_KEY, "object_id_secret": "s3"},
        }
    )
    ids, _ = ObjectIds.from_settings(GeneralSettings(object_id_secret="s3"))
    c = sdk(gw, MASTER_KEY)
    got = [f.id for f in c.files.list(extra_query={"model": "store"})]
    refs = [ids.open("file", i) for i in got]
    assert all(r is not None for r in refs)
    where = {r.upstream_id: r.deployment for r in refs if r is not None}
    assert set(where) == {"file-a1", "file-a2", "file-b1"}
    assert where["file-a1"] == where["file-a2"] != where["file-b1"]
    assert upstream.count("/files") == 1 and upstream2.count("/files") == 1
    # A page after one deployment's id is asked of that deployment alone.
    after = next(i for i, r in zip(got, refs, strict=True) if r and r.upstream_id == "file-a1")
    page = c.files.list(extra_query={"model": "store"}, after=after)
    assert upstream.count("/files") == 2 and upstream2.count("/files") == 1
    assert "after=file-a1" in upstream.last_request.path
    assert len(page.data) == 2
    # A deployment that fails is left out; the others still answer.
    upstream.enqueue(Error(500))
    left = [f.id for f in c.files.list(extra_query={"model": "store"})]
    assert [ids.open("file", i).upstream_id for i in left] == ["file-b1"]  # type: ignore[union-attr]
