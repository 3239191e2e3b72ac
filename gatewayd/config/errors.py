"""The one exception a bad configuration raises."""


class ConfigError(Exception):
    """A configuration problem: ``path`` names the key (``model_list[2].params.model``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
