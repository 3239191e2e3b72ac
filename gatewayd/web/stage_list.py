"""The stages around every routed request, in order: the one place to add one.

``before`` steps run top to bottom, ``after`` steps bottom to top (see
:mod:`gatewayd.stages.base`). Outermost first: a stage that must see every outcome
(a request log) goes above the ones that may refuse or answer early (limits, cache).
Request metrics and the access line are not stages: they are counted when the
response ends (:mod:`gatewayd.web.accesslog`), so that requests refused before
routing (401, 404, a bad body) are counted too; attempt spans are traced in
:mod:`gatewayd.routing.attempt`, where the attempts are made."""

from __future__ import annotations

from gatewayd.cache import CacheStage
from gatewayd.requestlog import RequestLogStage
from gatewayd.stages import LimitsStage, Pipeline, Stage


def request_pipeline(cache: CacheStage | None = None, request_log: bool = False) -> Pipeline:
    """The stages in force, in order. ``cache``: the service's one cache stage (it keeps
    the stored answers across reloads), given while ``general_settings.cache`` is set;
    ``request_log``: the service keeps a request log (a path, or the console is on).
    Without them, requests do not pay for stages that would only step aside."""
    stages: list[Stage] = []
    if request_log:  # outermost: one row per request, whatever the inner stages decide
        stages.append(RequestLogStage())
    if cache is None:
        # The key's limits and budget before routing; spend and the usage log after.
        stages.append(LimitsStage())
        return Pipeline(stages)
    stages += [
        # Looks the request up first: the limits stage admits a hit without tokens or budget.
        cache.lookup,
        LimitsStage(),
        # Innermost: answers a hit; on a miss it routes itself (coalescing identical
        # requests), so every stage that must see or refuse a request goes above it.
        cache,
    ]
    return Pipeline(stages)
