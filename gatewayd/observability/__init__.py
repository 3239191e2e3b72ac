"""Logs, metrics, request ids and reactor lag: what the gateway tells about itself."""
