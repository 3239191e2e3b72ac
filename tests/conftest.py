"""Shared fixtures: a fake OpenAI-compatible upstream and the real daemon in front of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from gatewayd.testing import FakeUpstream, GatewayProcess

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "etc" / "gateway.example.yaml"

UPSTREAM_KEY = "sk-upstream-SECRET-0123456789"
MASTER_KEY = "sk-master-SECRET-9876543210"


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def upstream2() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def gateway() -> Iterator[GatewayFactory]:
    """``gateway(config, **kw)`` starts the daemon; every one started is stopped by pid."""
    started: list[GatewayProcess] = []

    def start(config: Any, **kw: Any) -> GatewayProcess:
        proc = GatewayProcess(config, **kw)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


def openai_entry(
    alias: str, server: FakeUpstream, model: str = "up-model", **params: Any
) -> dict[str, Any]:
    """A model_list entry for ``server`` (OpenAI-compatible, keyed)."""
    p: dict[str, Any] = {
        "model": f"openai/{model}",
        "api_base": server.url,
        "api_key": UPSTREAM_KEY,
    }
    p.update(params)
    return {"model_name": alias, "params": p}


def sdk(base_url: str, key: str = "none", timeout: float = 30) -> openai.OpenAI:
    """The official SDK pointed at ``base_url``, with its own retries off (ours are tested)."""
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=timeout)
