"""What runs around a routed request: the stage seam (:mod:`~gatewayd.stages.base`),
its runner (:mod:`~gatewayd.stages.pipeline`) and the built-in stages. The list of
stages in force, in order, is :func:`gatewayd.web.stage_list.request_pipeline`."""

from gatewayd.stages.base import RouteContext, Stage, StreamTap
from gatewayd.stages.limits import LimitsStage
from gatewayd.stages.pipeline import Pipeline
from gatewayd.stages.route import route_alias

__all__ = ["LimitsStage", "Pipeline", "RouteContext", "Stage", "StreamTap", "route_alias"]
