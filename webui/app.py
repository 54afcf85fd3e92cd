"""The Flask app: state kept in app.extensions, one error shape, and the searches both blueprints run."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, current_app, render_template, request
from werkzeug.exceptions import HTTPException

from babelsearch.engine import SearchEngine
from babelsearch.engine.errors import (
    BabelsearchError,
    ImageNotFound,
    IncompatibleIndex,
    IndexNotFound,
    InvalidImage,
    InvalidQuery,
)
from babelsearch.engine.language import Language, detect_language, given_language
from babelsearch.engine.search import MAX_K, Hit

from . import SETTINGS
from .thumbs import ThumbnailCache, open_image

log = logging.getLogger("babelsearch.webui")

EXTENSION = "babelsearch"
# Options of SearchEngine.search that the API passes through when the engine's search takes them
# (rerank: margin, distance, csls or none; an unknown value is a 400 from the engine's InvalidQuery).
SEARCH_OPTIONS = ("rerank",)
# Query images are decoded no larger than needed: the encoders look at 224-256 pixels.
QUERY_IMAGE_SIDE = 512


class WebError(Exception):
    """An error with its HTTP status and machine-readable code, for the JSON and HTML error pages."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# engine's errors at the HTTP edge: (status, code)
DOMAIN_ERRORS: list[tuple[type[BabelsearchError], int, str]] = [
    (InvalidQuery, 400, "invalid_query"),
    (InvalidImage, 400, "invalid_image"),
    (ImageNotFound, 404, "not_found"),
    (IndexNotFound, 503, "no_index"),
    (IncompatibleIndex, 503, "no_index"),
]


@dataclass
class State:
    """What one app serves: the engine (or why there is none), the thumbnail cache, counters."""

    engine: SearchEngine | None
    load_error: str | None
    thumbs: ThumbnailCache
    started: float = field(default_factory=time.time)
    requests: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def require_engine(self) -> SearchEngine:
        if self.engine is None:
            raise WebError(503, "no_index", self.load_error or "no index loaded")
        return self.engine


def build_app(config: dict[str, Any]) -> Flask:
    app = Flask(__name__)
    app.config.update({name: default for name, (default, _) in SETTINGS.items()})
    app.config.update(config)
    app.json.ensure_ascii = False  # queries and paths in any script stay readable
    app.extensions[EXTENSION] = _load_state(app.config)

    from .api import api, images
    from .views import views

    app.register_blueprint(views)
    app.register_blueprint(api)
    app.register_blueprint(images)
    app.register_error_handler(Exception, _handle_error)
    app.before_request(_count_request)
    app.after_request(_finish_response)
    return app


def _load_state(config: dict[str, Any]) -> State:
    engine, error = config.get("ENGINE"), None
    if engine is None and config.get("INDEX_DIR"):
        try:
            engine = SearchEngine.open(config["INDEX_DIR"])
        except BabelsearchError as exc:
            error = f"no index loaded: {exc}"
    elif engine is None:
        error = "no index loaded: start the server with `babelsearch serve INDEX_DIR`"
    thumb_dir = config.get("THUMB_DIR")
    if thumb_dir is None and engine is not None:
        # hidden, so that an index kept inside a photo folder never has its thumbnails indexed
        thumb_dir = Path(engine.index_dir) / ".thumbs"
    return State(engine, error, ThumbnailCache(thumb_dir or None))


def state() -> State:
    return current_app.extensions[EXTENSION]


def warm_up(engine: SearchEngine) -> None:
    """Load the model's towers and the language detector now, not on the first request."""
    from PIL import Image

    engine.encoder.encode_texts(["warm-up"])
    engine.encoder.encode_images([Image.new("RGB", (64, 64), (128, 128, 128))])
    detect_language("warm up")


# -- the searches both blueprints run --------------------------------------------------------------
@dataclass
class Results:
    hits: list[Hit]
    took_ms: float
    k: int
    offset: int = 0
    query: str | None = None
    language: Language | None = None
    next_offset: int | None = None


def int_arg(args: Any, name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise WebError(400, "bad_parameter", f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise WebError(400, "bad_parameter", f"{name} must be from {low} to {high}, got {value}")
    return value


def text_search(query: str | None, k: int, offset: int = 0, lang: str | None = None,
                rerank: str | None = None) -> Results:
    engine = state().require_engine()
    if query is None:
        raise WebError(400, "bad_parameter", "q (the query text) is missing")
    language = given_language(lang) if lang else None
    options = _supported_options(engine, rerank=rerank)
    started = time.perf_counter()
    hits = engine.search_page(query, k=k, offset=offset, **options)
    took_ms = (time.perf_counter() - started) * 1000
    if language is None:
        language = detect_language(query)  # after the engine checked the query (empty, too long)
    more = len(hits) == k and offset + k < min(engine.count, MAX_K)
    return Results(hits, took_ms, k, offset, query, language, offset + k if more else None)


def similar_search(image_id: int, k: int) -> Results:
    engine = state().require_engine()
    started = time.perf_counter()
    hits = engine.similar(image_id, k=k)
    return Results(hits, (time.perf_counter() - started) * 1000, k)


def image_search(upload: Any, k: int) -> Results:
    """Search by an uploaded file (a werkzeug FileStorage, or None when the form had none)."""
    engine = state().require_engine()
    if upload is None or not upload.filename:
        raise WebError(400, "bad_parameter", "no image uploaded (send it as the form field 'image')")
    data = upload.read()
    if not data:
        raise InvalidImage("the uploaded file is empty")
    image = open_image(data, reduce_to=QUERY_IMAGE_SIDE)
    started = time.perf_counter()
    hits = engine.search_image(image, k=k)
    return Results(hits, (time.perf_counter() - started) * 1000, k)


def image_row(image_id: int) -> dict[str, Any]:
    row = state().require_engine().get(image_id)
    if row is None:
        raise ImageNotFound(f"no image with id {image_id}")
    return row


def _supported_options(engine: SearchEngine, **options: Any) -> dict[str, Any]:
    accepted = _search_parameters(type(engine))
    return {name: value for name, value in options.items()
            if name in SEARCH_OPTIONS and value not in (None, "") and name in accepted}


_parameters_cache: dict[type, frozenset[str]] = {}


def _search_parameters(engine_type: type) -> frozenset[str]:
    if engine_type not in _parameters_cache:
        _parameters_cache[engine_type] = frozenset(inspect.signature(engine_type.search).parameters)
    return _parameters_cache[engine_type]


# -- errors, counters, headers ---------------------------------------------------------------------
def wants_json() -> bool:
    return request.path.startswith(("/api/", "/images/"))


def describe_error(exc: Exception) -> tuple[int, str, str]:
    """(HTTP status, code, message) of any exception, for the JSON error shape and the HTML pages."""
    if isinstance(exc, WebError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if status == 413:
            code, limit = "payload_too_large", current_app.config.get("MAX_CONTENT_LENGTH")
            message = f"the upload is too large (at most {limit / 2**20:g} MiB)" if limit else message
        return status, code, message
    if isinstance(exc, BabelsearchError):
        status, code = next(((s, c) for kind, s, c in DOMAIN_ERRORS if isinstance(exc, kind)), (400, "error"))
        return status, code, str(exc)
    log.exception("unexpected error on %s %s", request.method, request.path, exc_info=exc)
    return 500, "internal_error", "internal error; the server log has the details"


def _handle_error(exc: Exception):
    status, code, message = describe_error(exc)
    if wants_json():
        return {"error": {"code": code, "message": message}}, status
    return render_template("error.html", status=status, code=code, message=message), status


def _count_request() -> None:
    s = state()
    with s.lock:
        s.requests[request.endpoint or "unknown"] += 1


def _finish_response(response):
    s = state()
    with s.lock:
        s.statuses[response.status_code] += 1
    # everything the pages use is served from here: no CDN, no inline script
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response
