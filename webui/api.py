"""The JSON API (/api/...) and the image bytes (/images/<id>/...): parse, call, format.

Files are only ever found through the catalog: a request names an integer id, the catalog row gives
the path. No part of a request reaches the file system.
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, request, url_for
from werkzeug.wsgi import wrap_file

from babelsearch.engine.errors import ImageTooLarge, InvalidImage
from babelsearch.engine.options import MAX_K
from babelsearch.engine.search import Hit

from .errors import WebError
from .files import open_indexed_file
from .openapi import openapi_document
from .searching import (
    Results,
    duplicate_groups_cached,
    image_row,
    image_search,
    int_arg,
    lang_arg,
    search_options,
    similar_search,
    single_values,
    text_search,
)
from .state import request_engine, require_engine, state
from .thumbs import THUMB_SIZES

api = Blueprint("api", __name__, url_prefix="/api")
images = Blueprint("images", __name__, url_prefix="/images")

# what a browser may be told a file is (never HTML or SVG); anything else is sent as plain bytes
SAFE_IMAGE_TYPES = {
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/bmp",
    "image/avif",
    "image/tiff",
    "image/heic",
    "image/heif",
}


@api.before_request
@images.before_request
def one_value_each() -> None:
    single_values(request.args, request.form)


def hit_json(hit: Hit) -> dict[str, Any]:
    # the CLI's --json shape: id, path, score (after reranking), cosine (before), relevant, similar
    return hit.to_json()


def filters_json(found: Results) -> dict[str, Any] | None:
    # the filter as applied, under the request's names (None: every image was searched)
    return found.where.to_json() if found.where is not None else None


@api.get("/search")
def search():
    k = int_arg(request.args, "k", current_app.config["API_DEFAULT_K"], 1, MAX_K, strict=True)
    options = search_options(request.args, k, strict=True)
    offset = int_arg(request.args, "offset", 0, 0, MAX_K - 1, strict=True)
    found = text_search(request.args.get("q"), options, offset, lang_arg(request.args))
    return {
        "query": found.query,
        "k": k,
        "offset": offset,
        "took_ms": round(found.took_ms, 2),
        "language": found.language.to_json() if found.language else None,
        "readings": found.readings,
        "filters": filters_json(found),
        "results": [hit_json(hit) for hit in found.hits],
        "next_offset": found.next_offset,
    }


@api.get("/similar/<int:image_id>")
def similar(image_id: int):
    k = int_arg(request.args, "k", current_app.config["API_DEFAULT_K"], 1, MAX_K, strict=True)
    found = similar_search(image_id, k, search_options(request.args, k, strict=True, image=True))
    return {
        "id": image_id,
        "k": k,
        "took_ms": round(found.took_ms, 2),
        "filters": filters_json(found),
        "results": [hit_json(hit) for hit in found.hits],
    }


MAX_GROUPS = 1000


@api.get("/duplicates")
def duplicates():
    """Groups of near-duplicate images (largest first), as `babelsearch duplicates --json` lists them."""
    limit = int_arg(request.args, "limit", 100, 1, MAX_GROUPS, strict=True)
    engine = require_engine()
    from babelsearch.engine.duplicate_scan import group_rows

    groups = duplicate_groups_cached(engine)
    return {
        "total": len(groups),
        "groups": [
            [{"id": row["id"], "path": row["path"]} for row in group] for group in group_rows(engine, groups[:limit])
        ],
    }


@api.post("/search/image")
def search_image():
    # the options may come in the form (as the document says) or the query string, like k
    k = int_arg(request.values, "k", current_app.config["API_DEFAULT_K"], 1, MAX_K, strict=True)
    options = search_options(request.values, k, strict=True, image=True)
    found = image_search(request.files.get("image"), k, options)
    return {
        "k": k,
        "took_ms": round(found.took_ms, 2),
        "filters": filters_json(found),
        "results": [hit_json(hit) for hit in found.hits],
    }


@api.get("/images/<int:image_id>")
def image(image_id: int):
    row = image_row(image_id)
    return {
        **row,
        "name": Path(row["path"]).name,
        "thumb_url": url_for("images.thumb", image_id=image_id),
        "file_url": url_for("images.file", image_id=image_id),
        "page_url": url_for("views.image", image_id=image_id),
    }


@api.get("/health")
def health():
    engine = require_engine()  # 503 with the reason when no index is loaded
    return {
        "status": "ok",
        "images": engine.count,
        "model": engine.manifest.model,
        "generation": engine.manifest.updated,  # when the served generation was committed
    }


@api.get("/stats")
def stats():
    s, engine = state(), request_engine()  # health and stats describe the same engine a search uses
    with s.lock:
        requests, statuses = dict(s.requests), {str(k): v for k, v in s.statuses.items()}
    return {
        "index": engine.info() if engine else None,
        "generations": s.generations,
        "reload_error": s.reload_error,
        "load_error": s.load_error,
        "uptime_s": round(time.time() - s.started, 1),
        "requests": requests,
        "statuses": statuses,
    }


@api.get("/openapi.json")
def openapi():
    return openapi_document()


@images.get("/<int:image_id>/thumb")
def thumb(image_id: int):
    size = int_arg(request.args, "size", THUMB_SIZES[0], 1, max(THUMB_SIZES), strict=True)
    if size not in THUMB_SIZES:
        raise WebError(400, "bad_parameter", f"size must be one of {', '.join(map(str, THUMB_SIZES))}")
    row = image_row(image_id)
    # checked even when a thumbnail is cached: what is not served as a file is not shown small either
    file, _ = open_indexed_file(row)
    with file:
        try:
            data = state().thumbs.thumbnail(row, size, source=file)
        except ImageTooLarge:
            raise  # 413 with the reason: too costly to decode for a request, not unreadable
        except InvalidImage as exc:
            raise WebError(500, "file_unreadable", f"the indexed file can no longer be decoded ({exc})") from None
    response = current_app.response_class(data, mimetype="image/jpeg")
    response.set_etag(f"{image_id}-{row.get('sha256') or ''}-{size}")
    response.cache_control.private = True
    response.cache_control.max_age = 3600
    return response.make_conditional(request)


@images.get("/<int:image_id>/file", endpoint="file")
def image_file(image_id: int):
    row = image_row(image_id)
    file, st = open_indexed_file(row)  # the indexed file itself, or 404/410: never what a path now leads to
    guessed = mimetypes.guess_type(row["path"])[0]
    response = current_app.response_class(
        wrap_file(request.environ, file),
        mimetype=guessed if guessed in SAFE_IMAGE_TYPES else "application/octet-stream",
        direct_passthrough=True,
    )
    response.content_length = st.st_size
    response.last_modified = st.st_mtime  # type: ignore[assignment]
    response.set_etag(row.get("sha256") or f"{st.st_mtime_ns}-{st.st_size}")
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    try:
        return response.make_conditional(request, accept_ranges=True, complete_length=st.st_size)
    except Exception:  # a Range that cannot be satisfied (416): the descriptor is not left to the GC
        file.close()
        raise
