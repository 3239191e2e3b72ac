"""The 400 for an endpoint no deployment of the alias serves (``params.api_endpoints``)."""

from __future__ import annotations

from gatewayd.providers.base import Endpoint
from gatewayd.providers.capabilities import endpoint_name
from gatewayd.routing import Router


def unserved_message(router: Router, alias: str, endpoint: Endpoint) -> str | None:
    """Why ``alias`` cannot take a request for ``endpoint`` (the message of a 400 with
    code ``endpoint_not_supported``), or None when one of its deployments serves it."""
    if router.endpoints.any(router.table, alias, endpoint):
        return None
    return (
        f"The model '{alias}' does not serve /v1/{endpoint.value}: none of its deployments "
        f"lists '{endpoint_name(endpoint)}' in params.api_endpoints"
    )
