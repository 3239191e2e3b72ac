"""The response cache and request coalescing (``general_settings.cache``): a stage
around routing (:class:`~gatewayd.cache.stage.CacheStage`). See docs/cache.md."""

from gatewayd.cache.stage import CacheStage

__all__ = ["CacheStage"]
