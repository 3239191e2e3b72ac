"""Configuration: one YAML file, parsed and validated once into immutable objects.

The running service holds one :class:`GatewayConfig`; a reload builds a new one
and swaps it whole.
"""

from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config, parse_config
from gatewayd.config.model import Deployment, GatewayConfig, GeneralSettings

__all__ = [
    "ConfigError",
    "Deployment",
    "GatewayConfig",
    "GeneralSettings",
    "load_config",
    "parse_config",
]
