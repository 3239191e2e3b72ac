"""The stages around every routed request, in order: the one place to add one.

``before`` steps run top to bottom, ``after`` steps bottom to top (see
:mod:`gatewayd.stages.base`). Outermost first: a stage that must see every outcome
(a request log) goes above the ones that may refuse or answer early (limits, cache).
Request metrics and the access line are not stages: they are counted when the
response ends (:mod:`gatewayd.web.accesslog`), so that requests refused before
routing (401, 404, a bad body) are counted too; attempt spans are traced in
:mod:`gatewayd.routing.attempt`, where the attempts are made."""

from __future__ import annotations

from gatewayd.requestlog import RequestLogStage
from gatewayd.stages import LimitsStage, Pipeline, Stage


def request_pipeline() -> Pipeline:
    """The stages in force, in order."""
    stages: list[Stage] = [
        RequestLogStage(),  # one row per request, whatever the inner stages decide
        LimitsStage(),  # the key's limits and budget; spend and the usage log after
    ]
    return Pipeline(stages)
