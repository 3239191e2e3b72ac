"""Routing: which deployment answers, with retries, cooldowns and fallbacks."""

from gatewayd.routing.router import RouteError, Router, RouteResult
from gatewayd.routing.table import Route, RoutingTable, build_table

__all__ = ["Route", "RouteError", "RouteResult", "Router", "RoutingTable", "build_table"]
