"""Shared by the console's tests: a config with a fake upstream that can fail, the
mock, an admin key and a plain key; and small HTTP helpers."""

from __future__ import annotations

import json
from typing import Any

from conftest import MASTER_KEY, UPSTREAM_KEY, openai_entry
from test_e2e_api import raw

from gatewayd.testing import FakeUpstream

ADMIN_KEY = "sk-ops-admin-SECRET-5555"
USER_KEY = "sk-alice-user-SECRET-4444"
MOCK_TEXT = "Streamed hello from the console mock."
#: Every secret the gateway holds: none may appear in a page or an API answer.
SECRETS = (MASTER_KEY, UPSTREAM_KEY, ADMIN_KEY, USER_KEY)


def console_config(flaky: FakeUpstream, **general: Any) -> dict[str, Any]:
    return {
        "model_list": [
            openai_entry("flaky", flaky, "flaky-model"),
            {
                "model_name": "demo",
                "params": {
                    "model": "mock/demo",
                    "mock_response": MOCK_TEXT,
                    "mock_stream_delay_ms": 20,
                },
            },
        ],
        "keys": [
            {"name": "alice", "key": USER_KEY, "rpm": 1000, "budget": {"usd": 5, "period": "1d"}},
            {"name": "ops", "key": ADMIN_KEY, "admin": True},
        ],
        "general_settings": {
            "master_key": MASTER_KEY,
            "num_retries": 0,
            "allowed_fails": 1,
            "cooldown_time": 600,
            **general,
        },
    }


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def get_json(port: int, path: str, key: str = MASTER_KEY) -> tuple[int, dict[str, str], Any]:
    status, headers, body = raw(port, "GET", path, None, bearer(key))
    return status, headers, json.loads(body) if body else None


def chat(port: int, alias: str, key: str = USER_KEY, content: str = "hi") -> int:
    status, _, _ = raw(
        port,
        "POST",
        "/v1/chat/completions",
        json.dumps({"model": alias, "messages": [{"role": "user", "content": content}]}).encode(),
        {"content-type": "application/json", **bearer(key)},
    )
    return status
