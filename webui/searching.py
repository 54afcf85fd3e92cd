"""The searches both blueprints run: parse a request's values once, call the engine, time the call."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from babelsearch.engine.errors import ImageNotFound, InvalidImage
from babelsearch.engine.images import open_image
from babelsearch.engine.language import Language, detect_language, given_language
from babelsearch.engine.options import MAX_K, SearchOptions
from babelsearch.engine.search import Hit

from .errors import WebError
from .state import state

# Query images are decoded no larger than needed: the encoders look at 224-256 pixels.
QUERY_IMAGE_SIDE = 512


@dataclass
class Results:
    hits: list[Hit]
    took_ms: float
    k: int
    offset: int = 0
    query: str | None = None
    language: Language | None = None
    next_offset: int | None = None


def int_arg(args: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """A whole-number request value from low to high, or a 400 "bad_parameter" saying what is wrong."""
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


def search_options(args: Mapping[str, Any], k: int) -> SearchOptions:
    """The search options of a request: ``k`` (already parsed, as on every route) and the request's
    rerank, margin_k, nprobe and refine_factor, checked here once; a bad one is the engine's
    InvalidQuery, a 400 "invalid_query" with its message."""
    return SearchOptions.from_values(args, k=k)


def text_search(query: str | None, options: SearchOptions, offset: int = 0, lang: str | None = None) -> Results:
    engine = state().require_engine()
    if query is None:
        raise WebError(400, "bad_parameter", "q (the query text) is missing")
    language = given_language(lang) if lang else None
    started = time.perf_counter()
    hits = engine.search_page(query, offset=offset, options=options)
    took_ms = (time.perf_counter() - started) * 1000
    if language is None:
        language = detect_language(query)  # after the engine checked the query (empty, too long)
    k = options.k
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
