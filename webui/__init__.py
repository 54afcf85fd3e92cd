"""Web UI, JSON API and Python client, built on engine's public API.

    from babelsearch.webui import create_app       # the Flask app factory (Flask is imported only when called)
    from babelsearch.webui.client import Client    # the HTTP client: standard library only

This module imports nothing heavy, so that ``webui.client`` stays light for scripts that only search
a running server.
"""

from __future__ import annotations

if __name__ != "babelsearch.webui":  # the checkout's webui/ folder imported as a top-level package
    raise ImportError(
        "babelsearch's packages are installed under one name: import babelsearch.webui "
        "(and install the project, e.g. `pip install -e .`), not webui"
    )


from typing import Any, Mapping

__all__ = ["create_app", "SETTINGS"]

# Every setting, its default and what it does, in one place; create_app's mapping overrides them.
SETTINGS: dict[str, tuple[Any, str]] = {
    "INDEX_DIR": (None, "The index directory to serve; without one the UI says 'no index loaded'."),
    "ENGINE": (None, "An already opened engine.SearchEngine (used instead of opening INDEX_DIR)."),
    "THUMB_DIR": (None, "Where thumbnails are cached; default INDEX_DIR/.thumbs. False: not cached."),
    "MAX_CONTENT_LENGTH": (16 * 1024 * 1024, "Largest request body (an uploaded query image), bytes."),
    "PAGE_SIZE": (24, "Results per page in the browser."),
    "API_DEFAULT_K": (10, "k of API searches that give none."),
}


def create_app(config: Mapping[str, Any] | None = None):
    """A Flask app serving one index: the browser UI at /, the JSON API under /api."""
    from .app import build_app

    return build_app(dict(config or {}))
