"""Provider clients: one per deployment (see :mod:`gatewayd.providers.factory`).

:mod:`~gatewayd.providers.base` defines the seam every provider implements;
:mod:`~gatewayd.config.catalog` holds what we know of each upstream.
"""
