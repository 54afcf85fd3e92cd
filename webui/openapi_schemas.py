"""The pieces the OpenAPI document (webui/openapi.py) is built from: every request parameter with its
JSON Schema, as exact as the server reads it, and the small helpers that spell references, JSON
bodies and error responses."""

from __future__ import annotations

from typing import Any

from babelsearch.engine.filters import ORIENTATIONS
from babelsearch.engine.options import MAX_K, MAX_NPROBE, MAX_REFINE_FACTOR, MIN_SCORE_LIMIT

from .searching import (
    DATE_TEXT,
    MAX_FOLDER_CHARS,
    MAX_FOLDERS,
    MAX_SIDE,
    TYPE_NAMES,
)

# What str.strip() removes, so a query of these only is "empty" to the engine: listed one by one (not
# \s), so that the pattern means the same in JSON Schema's ECMA-262 regexes as in Python's.
SPACE_CLASS = r"\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_ONLY_SPACE = f"[^{SPACE_CLASS}]"
# what a query image is sent as; anything Pillow cannot decode is a 400 "invalid_image"
UPLOAD_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff")


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error_refs(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/E{status}"} for status in statuses}


def param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False):
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


ID = param("image_id", "path", {"type": "integer", "minimum": 0}, "Catalog id of an image.", True)
K = param(
    "k",
    "query",
    {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10},
    "How many hits; when given, a whole number (an empty k= is refused).",
)


FOLDER = {"type": "string", "minLength": 1, "maxLength": MAX_FOLDER_CHARS, "pattern": "^[^\u0000]*$"}
DATE = {"type": "string", "pattern": f"^{DATE_TEXT}$"}
SIDE = {"type": "integer", "minimum": 1, "maximum": MAX_SIDE}
# (name, schema, description) of what every search takes: the index's knobs, the filters, the cut, the folding
OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "nprobe",
        {"type": "integer", "minimum": 1, "maximum": MAX_NPROBE},
        "Inverted lists scanned (IVF indexes; more than the index has: all); default: the index's.",
    ),
    (
        "refine_factor",
        {"type": "integer", "minimum": 1, "maximum": MAX_REFINE_FACTOR},
        "k * this many candidates are re-scored exactly; default: the index's.",
    ),
    (
        "folder",
        {"type": "array", "items": FOLDER, "maxItems": MAX_FOLDERS},
        "Only images in this folder or below (repeat it for any of several). An absolute path matches "
        "the images under it; a relative one (2024/summer) a folder of that name anywhere in the path.",
    ),
    (
        "exclude",
        {"type": "array", "items": FOLDER, "maxItems": MAX_FOLDERS},
        "Leave out the images in this folder or below (repeatable; read like folder).",
    ),
    (
        "after",
        DATE,
        "Only photos taken on or after this (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], local time): the EXIF "
        "DateTimeOriginal, else the file's modification time. With before, it must be the earlier one.",
    ),
    ("before", DATE, "Only photos taken before this (exclusive; the same form as after)."),
    ("orientation", {"enum": list(ORIENTATIONS)}, "As shown (after EXIF rotation)."),
    ("min_width", SIDE, "Only images at least this many pixels wide."),
    ("min_height", SIDE, "Only images at least this many pixels high."),
    (
        "type",
        {"type": "array", "items": {"enum": list(TYPE_NAMES)}, "maxItems": len(TYPE_NAMES)},
        "Only files of this format (repeatable: any of them); jpg, heic and tif name jpeg, heif and tiff.",
    ),
    (
        "min_score",
        {"type": "number", "minimum": -MIN_SCORE_LIMIT, "maximum": MIN_SCORE_LIMIT},
        "Leave out hits whose score (after any reranking) is below this: a hard cut, unlike `relevant`.",
    ),
    (
        "collapse",
        {"type": "boolean", "default": True},
        "Fold near-duplicates (the same shot resized, re-encoded, a burst) into the best-ranked of them, "
        "listed in its `similar`; false: every image in its own place.",
    ),
]
# image queries rank by plain cosine: the query bank's reranking (rerank, margin_k) applies to text only
PLAIN_COSINE = " Ranked by plain cosine: rerank and margin_k do not apply to image queries."


def option_params(*skip: str) -> list[dict[str, Any]]:
    return [param(name, "query", schema, text) for name, schema, text in OPTIONS if name not in skip]
