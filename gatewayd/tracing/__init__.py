"""Traces: a request's spans, OpenTelemetry export, GenAI semantic attributes."""
