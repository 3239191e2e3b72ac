"""The operator console at ``/ui``: sign-in, Overview, Requests, Keys, Playground, and
the JSON API they use (docs/console.md). Mounted by the service when
``general_settings.ui`` is on (default: when a master key is set)."""

from gatewayd.console.resources import ConsoleRoot

__all__ = ["ConsoleRoot"]
