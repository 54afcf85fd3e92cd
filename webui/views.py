"""The browser UI: server-rendered pages (searching works with JavaScript off; app.js only adds to it)."""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, render_template, request

from babelsearch.engine.errors import BabelsearchError
from babelsearch.engine.options import MAX_K

from .errors import WebError, describe_error
from .files import file_problem
from .searching import image_row, image_search, int_arg, search_options, similar_search, text_search
from .state import request_engine, require_engine

views = Blueprint("views", __name__)

# formats every browser shows in an <img>; others are shown through the large JPEG preview
BROWSER_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"}
SIMILAR_ON_DETAIL = 12


@views.app_template_filter("filename")
def filename(path: str) -> str:
    return Path(path).name


@views.app_template_filter("datetime")
def datetime_text(timestamp: float | None) -> str:
    if not timestamp:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


@views.app_context_processor
def page_globals() -> dict[str, Any]:
    engine = request_engine()
    return {
        "index_summary": {"images": engine.count, "model": engine.manifest.model} if engine else None,
        "max_upload_mib": (current_app.config.get("MAX_CONTENT_LENGTH") or 0) / 2**20,
    }


@views.get("/")
def home():
    """The search page; with ?q= the results of a text query, with ?like=<id> images like that one."""
    query = request.args.get("q", "")
    like = request.args.get("like", "")
    context: dict[str, Any] = {"query": query}
    try:
        k = context["k"] = int_arg(request.args, "k", current_app.config["PAGE_SIZE"], 1, MAX_K)
        require_engine()
        if like:
            image_id = int_arg(request.args, "like", 0, 0, 2**63 - 1)
            context.update(like=image_row(image_id), results=similar_search(image_id, k))
        elif query.strip():
            options = search_options(request.args, k)
            offset = int_arg(request.args, "offset", 0, 0, MAX_K - 1)
            context["results"] = text_search(query, options, offset, request.args.get("lang") or None)
    except (WebError, BabelsearchError) as exc:
        return _page_with_error(exc, context)
    return render_template("search.html", **context)


@views.post("/search/image")
def search_by_image():
    context: dict[str, Any] = {"query": ""}
    try:
        k = context["k"] = int_arg(request.values, "k", current_app.config["PAGE_SIZE"], 1, MAX_K)
        upload = request.files.get("image")
        results = image_search(upload, k)  # a 400 page when the form had no file
        context.update(results=results, upload_name=upload.filename if upload else "")
    except (WebError, BabelsearchError) as exc:
        return _page_with_error(exc, context)
    return render_template("search.html", **context)


@views.get("/image/<int:image_id>")
def image(image_id: int):
    row = image_row(image_id)
    problem = file_problem(row)  # the same check as the file route: a replaced file is not shown
    exists = problem is None
    return render_template(
        "image.html",
        row=row,
        exists=exists,
        file_problem=problem,
        show_original=exists and mimetypes.guess_type(row["path"])[0] in BROWSER_TYPES,
        similar=similar_search(image_id, SIMILAR_ON_DETAIL),
        query=request.args.get("q", ""),
    )


def _page_with_error(exc: Exception, context: dict[str, Any]):
    # the search page again, the message above an empty grid, with the matching status
    status, code, message = describe_error(exc)
    return render_template("search.html", error=message, error_code=code, **context), status
