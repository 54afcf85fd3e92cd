"""One error shape at the HTTP edge, request counters and the response headers every answer gets."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

from flask import Response, current_app, render_template, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from babelsearch.engine.errors import (
    BabelsearchError,
    ImageNotFound,
    ImageTooLarge,
    IncompatibleIndex,
    IndexNotFound,
    InvalidImage,
    InvalidQuery,
    ModelUnavailable,
)

from .state import request_engine, state

log = logging.getLogger("babelsearch.webui")


class WebError(Exception):
    """An error with its HTTP status and machine-readable code, for the JSON and HTML error pages."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# engine's errors at the HTTP edge: (status, code)
DOMAIN_ERRORS: list[tuple[type[BabelsearchError], int, str]] = [
    (InvalidQuery, 400, "invalid_query"),
    (ImageTooLarge, 413, "image_too_large"),  # before InvalidImage, its base
    (InvalidImage, 400, "invalid_image"),
    (ImageNotFound, 404, "not_found"),
    (IndexNotFound, 503, "no_index"),
    (IncompatibleIndex, 503, "no_index"),
    (ModelUnavailable, 503, "no_index"),  # the index's model is neither cached nor downloadable here
]


def wants_json() -> bool:
    """Whether the current request is answered in JSON (the API, image bytes) rather than a page."""
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


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The API's one error shape (the OpenAPI document's ``Error``), for the app and for the server."""
    return {"error": {"code": code, "message": message}}


def handle_error(exc: Exception) -> ResponseReturnValue:
    """The app's error handler: ``{"error": {"code", "message"}}`` for JSON routes, else error.html."""
    status, code, message = describe_error(exc)
    # what the exception says about itself besides its body: Allow of a 405 (RFC 9110 wants it)
    headers = (
        [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"] if isinstance(exc, HTTPException) else []
    )
    if wants_json():
        return error_body(code, message), status, headers
    return render_template("error.html", status=status, code=code, message=message), status, headers


def count_request() -> None:
    s = state()
    with s.lock:
        s.requests[request.endpoint or "unknown"] += 1
    request_engine()  # taken now: the whole request runs on the generation served when it started


def finish_response(response: Response) -> Response:
    s = state()
    with s.lock:
        s.statuses[response.status_code] += 1
    # everything the pages use is served from here: no CDN, no inline script
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    location = response.headers.get("Location")
    if location:
        # never send a client to a host named by the request (Host, X-Forwarded-Host): only to a path on
        # this server; "//host" and "/\host" would be read as another host by browsers, so one slash
        parts = urlsplit(location)
        path = "/" + parts.path.lstrip("/\\")
        response.headers["Location"] = urlunsplit(("", "", path, parts.query, parts.fragment))
    return response
