"""The operator console at /ui (see docs/console.md)."""
