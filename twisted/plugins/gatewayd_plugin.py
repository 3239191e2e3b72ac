"""twistd plugin: ``twistd -n gateway -c config.yaml``. A few lines over gatewayd.cli."""

from __future__ import annotations

from twisted.application.service import ServiceMaker

gateway = ServiceMaker(
    "gatewayd",
    "gatewayd.cli",
    "An OpenAI-compatible LLM gateway: routing, retries, fallbacks, streaming.",
    "gateway",
)
