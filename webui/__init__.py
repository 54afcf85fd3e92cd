"""Web UI, JSON API and Python client (built on engine's public API)."""
