"""The browser UI: server-rendered pages (searching works with JavaScript off; app.js only adds to it).

The pages' own words go through gettext (webui/i18n.py chooses the language); what the engine says
about a bad request (webui/errors.py) is shown as it says it."""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Any

from flask import Blueprint, current_app, render_template, request, url_for
from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from babelsearch.engine.errors import BabelsearchError
from babelsearch.engine.filters import FILE_TYPES, FILTER_PARAMS, ORIENTATIONS
from babelsearch.engine.options import MAX_K

from .errors import WebError, describe_error
from .files import file_problem
from .i18n import SWITCH_PARAM, current
from .searching import (
    duplicate_groups_cached,
    image_row,
    image_search,
    int_arg,
    search_options,
    similar_search,
    text_search,
)
from .state import request_engine, require_engine

views = Blueprint("views", __name__)

# formats every browser shows in an <img>; others are shown through the large JPEG preview
BROWSER_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp"}
SIMILAR_ON_DETAIL = 12
# the duplicates page shows this many groups at most (a large collection can have thousands)
MAX_GROUPS_SHOWN = 200
# the request values the search page carries from one result page to the next (and into the form)
CARRIED = ("q", "k", "lang", "rerank", "margin_k", "nprobe", "refine_factor", *FILTER_PARAMS, "min_score", "collapse")


@views.app_template_filter("filename")
def filename(path: str) -> str:
    return Path(path).name


@views.app_template_filter("datetime")
def datetime_text(timestamp: float | None) -> str:
    if not timestamp:
        return _("unknown")
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


@views.app_template_filter("language_name")
def language_name(language: Any) -> str:
    """A query's detected language named in the page's language (CLDR's names, through Babel); the
    engine's English name where CLDR has none."""
    code, english = getattr(language, "code", None), getattr(language, "name", "")
    ui = current()
    if ui.code == "en" or not code:
        return english
    from babel import Locale

    return Locale.parse(ui.code).languages.get(str(code).replace("-", "_")) or english


@views.app_context_processor
def page_globals() -> dict[str, Any]:
    engine = request_engine()
    return {
        "index_summary": {"images": engine.count, "model": engine.manifest.model} if engine else None,
        "max_upload_mib": (current_app.config.get("MAX_CONTENT_LENGTH") or 0) / 2**20,
        "page_url": page_url,
        "switcher": switcher(),
        "filter_values": filter_values(),
        "orientations": ORIENTATIONS,
        "file_types": FILE_TYPES,
    }


def page_url(**changes: Any) -> str:
    """The search page with this request's query and filters, and ``changes`` (None drops a value):
    how "More results" keeps the filters on the next page."""
    values: MultiDict[str, Any] = MultiDict()
    for name in CARRIED:
        for value in request.args.getlist(name):
            if value != "":
                values.add(name, value)
    for name, value in changes.items():
        values.poplist(name)
        if value is not None:
            values.setlist(name, value if isinstance(value, list) else [value])
    params: dict[str, Any] = values.to_dict(flat=False)
    return url_for("views.home", **params)


def switcher() -> dict[str, Any]:
    """Where the language switcher's GET form goes: this page again (its values kept as hidden fields),
    or the search page from a page that a plain GET cannot repeat (an upload's results)."""
    if request.method != "GET" or request.endpoint is None or request.blueprint != "views":
        return {"action": url_for("views.home"), "hidden": []}
    kept = [(name, value) for name, value in request.args.items(multi=True) if name != SWITCH_PARAM]
    return {"action": request.path, "hidden": kept}


def filter_values() -> dict[str, Any]:
    """The filter form's fields as this request gave them (kept across result pages)."""
    args = request.args
    return {
        "folder": [v for v in args.getlist("folder") if v] or [""],
        "exclude": [v for v in args.getlist("exclude") if v] or [""],
        "type": [v for v in args.getlist("type") if v],
        "active": any(args.get(name) for name in (*FILTER_PARAMS, "min_score")),
        "collapse_off": args.get("collapse", "").strip().lower() in ("0", "false", "off", "no"),
        **{name: args.get(name, "") for name in ("after", "before", "orientation", "min_width", "min_height")},
        "min_score": args.get("min_score", ""),
    }


@views.get("/")
def home():
    """The search page; with ?q= the results of a text query, with ?like=<id> images like that one
    (a query typed on that page wins: the filter form sends both)."""
    query = request.args.get("q", "")
    like = request.args.get("like", "")
    context: dict[str, Any] = {"query": query}
    try:
        k = context["k"] = int_arg(request.args, "k", current_app.config["PAGE_SIZE"], 1, MAX_K)
        require_engine()
        if like and not query.strip():
            image_id = int_arg(request.args, "like", 0, 0, 2**63 - 1)
            options = search_options(request.args, k, image=True)  # the filters, min_score, collapse
            context.update(like=image_row(image_id), results=similar_search(image_id, k, options))
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
        # a 400 page when the form had no file; near-duplicates folded as on every page
        results = image_search(upload, k, search_options(request.values, k, image=True))
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
        similar=similar_search(image_id, SIMILAR_ON_DETAIL, search_options({}, SIMILAR_ON_DETAIL, image=True)),
        query=request.args.get("q", ""),
    )


@views.get("/duplicates")
def duplicates():
    """Groups of near-duplicate images in the index (engine.duplicate_scan), as rows of thumbnails."""
    context: dict[str, Any] = {"query": "", "groups": [], "total": 0, "threshold": None}
    try:
        engine = require_engine()
        try:
            from babelsearch.engine.duplicate_scan import group_rows
            from babelsearch.engine.duplicates import DUPLICATE_THRESHOLD
        except ImportError:  # an engine without the module: say so on the page, not a 500
            raise WebError(503, "unavailable", _("Finding near-duplicates is not available here.")) from None
        groups = duplicate_groups_cached(engine)
        context.update(
            groups=group_rows(engine, groups[:MAX_GROUPS_SHOWN]),
            total=len(groups),
            threshold=DUPLICATE_THRESHOLD,
        )
    except (WebError, BabelsearchError) as exc:
        status, code, message = describe_error(exc)
        return render_template("duplicates.html", error=message, error_code=code, **context), status
    return render_template("duplicates.html", **context)


def _page_with_error(exc: Exception, context: dict[str, Any]):
    # the search page again, the message above an empty grid, with the matching status
    status, code, message = describe_error(exc)
    return render_template("search.html", error=message, error_code=code, **context), status
