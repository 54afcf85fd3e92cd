"""The searches both blueprints run: parse a request's values once, call the engine, time the call."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from babelsearch.engine.errors import ImageNotFound, InvalidImage, InvalidQuery
from babelsearch.engine.filters import FILE_TYPES, FILTER_PARAMS, ORIENTATIONS, Where
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
    """One search's answer. ``readings``: how the engine read a text query when it rewrote it (the
    English glosses of a Chinese-character query), [] when it did not; ``where``: the filter applied."""

    hits: list[Hit]
    took_ms: float
    k: int
    offset: int = 0
    query: str | None = None
    language: Language | None = None
    next_offset: int | None = None
    readings: list[str] = field(default_factory=list)
    where: Where | None = None


# A whole number: ASCII digits, perhaps a minus. int() alone would also take "+5", "5_000" and other
# scripts' digits ("٥"). The API takes only the one way JSON and its OpenAPI document write a number
# (no leading zeros, no spaces around); the pages, what a form may send.
WHOLE_NUMBER = re.compile(r"-?[0-9]+")
CANONICAL_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)")
# a number as JSON writes it (min_score=): float() would also take "+1", " 1", "1_0", "inf" and "nan"
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# The documented shape of lang= (engine.language checks the same shape, after trimming spaces).
LANG_CODE = r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*"
MAX_LANG_CHARS = 35  # what RFC 5646 asks every implementation to take
OPTION_NAMES = ("rerank", "margin_k", "nprobe", "refine_factor")
# image queries rank by plain cosine: rerank and margin_k (the query bank's terms) describe text queries
IMAGE_OPTION_NAMES = ("nprobe", "refine_factor")

# The filters (engine.filters.Where), as the API's document states them; Where checks the same again.
REPEATED_FILTERS = ("folder", "exclude", "type")  # any of the folders, none of the excluded, any of the types
SINGLE_FILTERS = tuple(name for name in FILTER_PARAMS if name not in REPEATED_FILTERS)
TYPE_NAMES = (*FILE_TYPES, "jpg", "heic", "tif")  # Where reads these three as jpeg, heif, tiff
# Folders per parameter and characters per folder: fewer than Where allows (64, 4096), so that the longest
# query string the API documents, every character percent-encoded UTF-8, fits the server's 64 KiB request
# line (webui.server.MAX_HEADER_BYTES): a request the document allows is always read, never a 431.
MAX_FOLDERS = 8
MAX_FOLDER_CHARS = 255
MAX_SIDE = 1_000_000  # min_width / min_height, pixels
MAX_REPEATS = {"folder": MAX_FOLDERS, "exclude": MAX_FOLDERS, "type": len(TYPE_NAMES)}
# A date as Where takes it, exactly: only real days (2023-02-29 is not one), years 1 to 9999 (what
# datetime reads), a time to the minute or second. Spelled out so the OpenAPI pattern says the same:
# every value it allows is a real date, so a request the document allows is answered.
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_MONTH_DAY = r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
DATE_TEXT = rf"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)(?:T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9])?)?"


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


def search_options(args: Mapping[str, Any], k: int, *, strict: bool = False, image: bool = False) -> SearchOptions:
    """The search options of a request: ``k`` (already parsed, as on every route), rerank, margin_k,
    nprobe and refine_factor (an image query, ``image``: only nprobe and refine_factor, since it ranks
    by plain cosine), the filters (engine.filters.FILTER_PARAMS), min_score and collapse, checked here
    once; a bad one is the engine's InvalidQuery, a 400 "invalid_query" with its message.

    ``collapse`` is on unless a request turns it off (``collapse=false``): near-duplicates are folded
    into one hit in the API and on the pages alike. The pages read a form's loose values (empty: the
    index's default; collapse also as 1/0, on/off, yes/no); the API (``strict``) reads each given value
    as it is, so that ``rerank=``, ``nprobe=+4`` or ``collapse=1`` is refused as the document says."""
    names = IMAGE_OPTION_NAMES if image else OPTION_NAMES
    if not strict:
        raw_collapse = args.get("collapse")
        more: dict[str, Any] = {"collapse": True} if raw_collapse is None or not str(raw_collapse).strip() else {}
        if not image:
            return SearchOptions.from_values(args, k=k, **more)
        picked = {name: args.get(name) for name in (*names, "min_score", "collapse")}
        return SearchOptions.from_values(picked, k=k, where=Where.from_values(args), **more)
    given: dict[str, Any] = {}
    for name in names:
        raw = args.get(name)
        if raw is None:
            continue
        # digits are numbers (margin_k's "all" and the modes stay text); anything else goes to the
        # engine as it came, which refuses it with its own message
        given[name] = int(raw) if CANONICAL_NUMBER.fullmatch(raw) and len(raw) <= 30 and name != "rerank" else raw
    return SearchOptions(
        k=k, where=filter_arg(args), min_score=min_score_arg(args), collapse=collapse_arg(args), **given
    )


def filter_arg(args: Mapping[str, Any]) -> Where | None:
    """The API's filters: each value of the documented shape (exactly: `` landscape`` or ``type=JPG`` is
    refused, a date must be a real one), then made a Where, which checks the rest (after < before)."""
    for name in FILTER_PARAMS:
        given = [
            raw for raw in (args.getlist(name) if hasattr(args, "getlist") else [args.get(name)]) if raw is not None
        ]
        most = MAX_REPEATS.get(name, 1)
        if len(given) > most:  # the ones read once are refused earlier (single_values), as a bad_parameter
            raise InvalidQuery(f"{name} is given {len(given)} times; at most {most}")
        for raw in given:
            problem = _filter_problem(name, raw)
            if problem:
                raise InvalidQuery(f"{name} must be {problem}, got {shown(raw)}")
    return Where.from_values(args)


def _filter_problem(name: str, raw: str) -> str | None:
    """What a filter value should be, when it is not that (None when it is)."""
    if name in ("folder", "exclude"):
        return None if 0 < len(raw) <= MAX_FOLDER_CHARS else f"a folder path of 1 to {MAX_FOLDER_CHARS} characters"
    if name in ("after", "before"):
        return None if re.fullmatch(DATE_TEXT, raw) else "a date such as 2024-07-14 or 2024-07-14T18:00[:00]"
    if name == "orientation":
        return None if raw in ORIENTATIONS else f"one of {', '.join(ORIENTATIONS)}"
    if name in ("min_width", "min_height"):
        return None if CANONICAL_NUMBER.fullmatch(raw) and len(raw) <= 30 else "a whole number of pixels"
    if name == "type":
        return None if raw in TYPE_NAMES else f"one of {', '.join(TYPE_NAMES)}"
    return None


def min_score_arg(args: Mapping[str, Any]) -> float | None:
    """The API's min_score=: a number as JSON writes it (SearchOptions checks the range)."""
    raw = args.get("min_score")
    if raw is None:
        return None
    value = float(raw) if JSON_NUMBER.fullmatch(raw) else math.nan
    if not math.isfinite(value):
        raise InvalidQuery(f"min_score must be a number such as 0.05, got {shown(raw)}")
    return value


def collapse_arg(args: Mapping[str, Any]) -> bool:
    """The API's collapse=: true (the default) or false, as JSON writes them."""
    raw = args.get("collapse")
    if raw is None:
        return True
    if raw not in ("true", "false"):
        raise InvalidQuery(f"collapse must be true or false, got {shown(raw)}")
    return raw == "true"


def lang_arg(args: Mapping[str, Any]) -> str | None:
    """The API's lang=: empty or absent means "detect it"; else a code of the documented shape."""
    raw = args.get("lang")
    if not raw:
        return None
    if len(raw) > MAX_LANG_CHARS or not re.fullmatch(LANG_CODE, raw):
        raise InvalidQuery(f"lang must be a language code such as 'de' or 'pt-BR', got {shown(raw)}")
    return raw


# the parameters the API reads once (others are allowed, and ignored; folder, exclude and type repeat)
API_PARAMS = frozenset(
    {"q", "k", "offset", "lang", "size", "limit", "min_score", "collapse", *OPTION_NAMES, *SINGLE_FILTERS}
)


def single_values(*sources: Mapping[str, Any]) -> None:
    """Refuse a request that gives a parameter the API reads once several times (``k=1&k=x``): the API
    documents one value each, and reading only the first would quietly ignore the others. The
    repeated filters (folder, exclude, type) are lists: each value counts."""
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
    # one hit more than the page, where ranks go on: whether a next page has any (a filter, min_score or
    # collapse leaves fewer hits than images, so the count alone cannot say)
    wanted = page + 1 if offset + page < min(engine.count, MAX_K) else page
    started = time.perf_counter()
    hits = engine.search_page(query, offset=offset, options=replace(options, k=wanted, lang=code))
    took_ms = (time.perf_counter() - started) * 1000
    more = len(hits) > page
    hits = hits[:page]
    return Results(
        hits,
        took_ms,
        options.k,
        offset,
        query,
        language,
        offset + page if more else None,
        readings=engine.query_readings(query),
        where=options.where,
    )


def similar_search(image_id: int, k: int, options: SearchOptions | None = None) -> Results:
    """The k images most like an indexed one; ``options`` (from ``search_options(..., image=True)``):
    nprobe, refine_factor, the filters, min_score and collapse (its k is replaced by ``k``)."""
    engine = require_engine()
    options = replace(options, k=k) if options is not None else SearchOptions(k=k)
    started = time.perf_counter()
    hits = engine.similar(image_id, options=options)
    return Results(hits, (time.perf_counter() - started) * 1000, k, where=options.where)


def image_search(upload: Any, k: int, options: SearchOptions | None = None) -> Results:
    """Search by an uploaded file (a werkzeug FileStorage, or None when the form had none); ``options``
    as for ``similar_search``."""
    engine = require_engine()
    if upload is None or not upload.filename:
        raise WebError(400, "bad_parameter", "no image uploaded (send it as the form field 'image')")
    data = upload.read()
    if not data:
        raise InvalidImage("the uploaded file is empty")
    options = replace(options, k=k) if options is not None else SearchOptions(k=k)
    from flask import current_app

    # checked from the header before decoding: a stranger's 144-megapixel PNG would cost 600 MB
    image = open_image(data, reduce_to=QUERY_IMAGE_SIDE, max_decode_pixels=current_app.config.get("MAX_DECODE_PIXELS"))
    started = time.perf_counter()
    hits = engine.search_image(image, options=options)
    return Results(hits, (time.perf_counter() - started) * 1000, k, where=options.where)


def image_row(image_id: int) -> dict[str, Any]:
    row = require_engine().get(image_id)
    if row is None:
        raise ImageNotFound(f"no image with id {image_id}")
    return row


DUPLICATES_CACHE = "babelsearch.duplicate_groups"


def duplicate_groups_cached(engine: Any) -> list[list[int]]:
    """The index's groups of near-duplicates (engine.duplicates), found once per index generation: a
    scan of every stored vector. Each generation has its own engine object; a weak reference to it, so
    that a replaced generation is not kept open for this."""
    import weakref

    from flask import current_app

    from babelsearch.engine.duplicate_scan import duplicate_groups

    cache = current_app.extensions.setdefault(DUPLICATES_CACHE, {})
    held = cache.get("engine")
    if held is None or held() is not engine:
        cache.update(engine=weakref.ref(engine), groups=duplicate_groups(engine))
    return cache["groups"]
