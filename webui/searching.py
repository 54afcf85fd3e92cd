"""The searches both blueprints run: parse a request's values once, call the engine, time the call."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from babelsearch.engine.errors import ImageNotFound, InvalidImage, InvalidQuery
from babelsearch.engine.images import open_image
from babelsearch.engine.language import UNDETERMINED, Language
from babelsearch.engine.options import MAX_K, SearchOptions, check_text
from babelsearch.engine.search import Hit

from .errors import WebError
from .state import require_engine

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


# A whole number: ASCII digits, perhaps a minus. int() alone would also take "+5", "5_000" and other
# scripts' digits ("٥"). The API takes only the one way JSON and its OpenAPI document write a number
# (no leading zeros, no spaces around); the pages, what a form may send.
WHOLE_NUMBER = re.compile(r"-?[0-9]+")
CANONICAL_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)")
# The documented shape of lang= (engine.language checks the same shape, after trimming spaces).
LANG_CODE = r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*"
OPTION_NAMES = ("rerank", "margin_k", "nprobe", "refine_factor")
# more inverted lists than an index has means all of them; an index of a billion images has 2**17
MAX_NPROBE = 2**20


def shown(raw: Any) -> str:
    """A request value as an error message quotes it: repr, cut short (a message never echoes 60 KB)."""
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def int_arg(args: Mapping[str, Any], name: str, default: int, low: int, high: int, *, strict: bool = False) -> int:
    """A whole-number request value from low to high, or a 400 "bad_parameter" saying what is wrong.

    The pages take what a form sends (an empty field is the default, spaces around are fine); the API
    (``strict``) takes only what its OpenAPI document allows: ``k=`` is an error there, not the default."""
    raw = args.get(name)
    if raw is None or (raw == "" and not strict):
        return default
    text = raw if strict else str(raw).strip()
    shape = CANONICAL_NUMBER if strict else WHOLE_NUMBER
    if not isinstance(text, str) or not shape.fullmatch(text) or len(text) > 30:
        raise WebError(400, "bad_parameter", f"{name} must be a whole number, got {shown(raw)}")
    value = int(text)
    if not low <= value <= high:
        raise WebError(400, "bad_parameter", f"{name} must be from {low} to {high}, got {value}")
    return value


def search_options(args: Mapping[str, Any], k: int, *, strict: bool = False) -> SearchOptions:
    """The search options of a request: ``k`` (already parsed, as on every route) and the request's
    rerank, margin_k, nprobe and refine_factor, checked here once; a bad one is the engine's
    InvalidQuery, a 400 "invalid_query" with its message.

    The pages read a form's loose values (empty: the index's default); the API (``strict``) reads
    each given value as it is, so that ``rerank=`` or ``nprobe=+4`` is refused as the document says."""
    if not strict:
        return SearchOptions.from_values(args, k=k)
    given: dict[str, Any] = {}
    for name in OPTION_NAMES:
        raw = args.get(name)
        if raw is None:
            continue
        # digits are numbers (margin_k's "all" and the modes stay text); anything else goes to the
        # engine as it came, which refuses it with its own message
        given[name] = int(raw) if CANONICAL_NUMBER.fullmatch(raw) and len(raw) <= 30 and name != "rerank" else raw
    nprobe = given.get("nprobe")
    if isinstance(nprobe, int) and nprobe > MAX_NPROBE:  # documented, so that every allowed value is taken
        raise InvalidQuery(f"nprobe must be an integer from 1 to {MAX_NPROBE}, got {nprobe}")
    return SearchOptions(k=k, **given)


def lang_arg(args: Mapping[str, Any]) -> str | None:
    """The API's lang=: empty or absent means "detect it"; else a code of the documented shape."""
    raw = args.get("lang")
    if not raw:
        return None
    if not re.fullmatch(LANG_CODE, raw):
        raise InvalidQuery(f"lang must be a language code such as 'de' or 'pt-BR', got {shown(raw)}")
    return raw


# the parameters the API reads (others are allowed, and ignored)
API_PARAMS = frozenset({"q", "k", "offset", "lang", "size", *OPTION_NAMES})


def single_values(*sources: Mapping[str, Any]) -> None:
    """Refuse a request that gives a parameter the API reads several times (``k=1&k=x``): the API
    documents one value each, and reading only the first would quietly ignore the others."""
    for values in sources:
        for name in API_PARAMS & set(values):
            count = len(values.getlist(name)) if hasattr(values, "getlist") else 1
            if count > 1:
                raise WebError(400, "bad_parameter", f"{name[:40]} is given {count} times; give it once")


def text_search(query: str | None, options: SearchOptions, offset: int = 0, lang: str | None = None) -> Results:
    """A page of a text search. Ranks end at MAX_K: a page reaching past it is cut short there (and
    has no next page), so every k and offset the API documents can be answered."""
    engine = require_engine()
    if query is None:
        raise WebError(400, "bad_parameter", "q (the query text) is missing")
    page = min(options.k, MAX_K - offset)
    if page < 1:
        raise InvalidQuery(f"offset must be less than {MAX_K}, got {offset}")
    check_text(query)  # before detecting: an empty or too long query is its own error
    # detected (or given) once: the language shown is the one the model is given (NLLB's token)
    language = engine.query_language(query, lang or options.lang)
    code = None if language.code == UNDETERMINED else language.code
    started = time.perf_counter()
    hits = engine.search_page(query, offset=offset, options=replace(options, k=page, lang=code))
    took_ms = (time.perf_counter() - started) * 1000
    more = len(hits) == page and offset + page < min(engine.count, MAX_K)
    return Results(hits, took_ms, options.k, offset, query, language, offset + page if more else None)


def similar_search(image_id: int, k: int) -> Results:
    engine = require_engine()
    started = time.perf_counter()
    hits = engine.similar(image_id, k=k)
    return Results(hits, (time.perf_counter() - started) * 1000, k)


def image_search(upload: Any, k: int) -> Results:
    """Search by an uploaded file (a werkzeug FileStorage, or None when the form had none)."""
    engine = require_engine()
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
    row = require_engine().get(image_id)
    if row is None:
        raise ImageNotFound(f"no image with id {image_id}")
    return row
