"""gatewayd: an OpenAI-compatible LLM gateway daemon on Twisted."""

__version__ = "0.1.0"
