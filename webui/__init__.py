"""Web UI, JSON API and Python client, built on engine's public API.

    from babelsearch.webui import create_app       # the Flask app factory (Flask is imported only when called)
    from babelsearch.webui.client import Client    # the HTTP client: standard library only

Inside: ``state`` (what one app serves: engine, thumbnails, counters), ``errors`` (one error shape,
counters, headers), ``searching`` (the searches both blueprints run), the blueprints ``api`` and
``views``, ``thumbs`` and ``openapi``.

This module imports nothing heavy, so that ``webui.client`` stays light for scripts that only search
a running server.
"""

from __future__ import annotations

if __name__ != "babelsearch.webui":  # the checkout's webui/ folder imported as a top-level package
    raise ImportError(
        "babelsearch's packages are installed under one name: import babelsearch.webui "
        "(and install the project, e.g. `pip install -e .`), not webui"
    )


from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app", "SETTINGS"]

# Every setting, its default and what it does, in one place; create_app's mapping overrides them.
SETTINGS: dict[str, tuple[Any, str]] = {
    "INDEX_DIR": (None, "The index directory to serve; without one the UI says 'no index loaded'."),
    "ENGINE": (None, "An already opened engine.SearchEngine (used instead of opening INDEX_DIR)."),
    "THUMB_DIR": (None, "Where thumbnails are cached; default INDEX_DIR/.thumbs. False: not cached."),
    "MAX_CONTENT_LENGTH": (16 * 1024 * 1024, "Largest request body (an uploaded query image), bytes."),
    "MAX_DECODE_PIXELS": (
        50_000_000,
        "Most pixels decoded for one request (an uploaded query image, a thumbnail), checked from the "
        "header before decoding (413 above it); a baseline JPEG counts at the reduced size it is decoded "
        "at. About 4 bytes of memory each: 50 million (a 48-megapixel phone photo passes) is 200 MB.",
    ),
    "PAGE_SIZE": (24, "Results per page in the browser."),
    "API_DEFAULT_K": (10, "k of API searches that give none."),
    "INDEX_CHECK_INTERVAL": (
        1.0,
        "Seconds between looks at INDEX_DIR/manifest.json for a newer generation, which is then served "
        "without a restart (0: at every request; None: never).",
    ),
}


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """A Flask app serving one index: the browser UI at /, the JSON API under /api.

    ``config`` overrides SETTINGS' defaults (and may add any Flask setting)."""
    # imported here, not at the top: importing babelsearch.webui (for the client) loads no Flask
    from flask import Flask
    from werkzeug.routing import Map

    from . import i18n
    from .api import api, images
    from .errors import count_request, finish_response, handle_error
    from .state import EXTENSION, load_state
    from .views import views

    class StrictMap(Map):
        # Werkzeug answers "//x" and "/x/" with a redirect to an absolute URL built from the request's Host
        # header (an open redirect); with these off such paths are plain 404s and no rule ever redirects.
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{"merge_slashes": False, "strict_slashes": False, **kwargs})

    class App(Flask):
        url_map_class = StrictMap

    app = App(__name__)
    app.config.update({name: default for name, (default, _) in SETTINGS.items()})
    app.config.update(config or {})
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # queries and paths in any script stay readable
    app.extensions[EXTENSION] = load_state(app.config)
    i18n.init_app(app)  # Flask-Babel: the pages' words in the language the browser asks for
    app.register_blueprint(views)
    app.register_blueprint(api)
    app.register_blueprint(images)
    app.register_error_handler(Exception, handle_error)
    app.before_request(count_request)
    app.after_request(finish_response)
    return app
