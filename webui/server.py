"""The HTTP server ``babelsearch serve`` runs: waitress, with limits that slow or idle clients cannot exhaust.

waitress reads requests and writes answers in one event loop and hands only complete requests to its
worker threads, so a slow client never holds a thread, only a connection. What it has to be told:

- ``connection_limit``: waitress stops accepting at 100 open connections by default, so 100 idle or
  half-sent connections (a browser's keep-alives, or anyone on purpose) shut everyone else out. Here
  1000, raised where the process may open so many files, and kept below that limit.
- ``channel_timeout``: a connection with nothing in progress and no bytes for this long is closed
  (waitress: 120 s), a half-sent request included; checked every ``cleanup_interval`` seconds (30).
- ``asyncore_use_poll``: select() cannot watch more than 1024 sockets; poll() can.
- ``max_request_header_size``: 64 KiB of request line and headers (a 1000-character query in any
  script is under 12 KiB percent-encoded); more is refused with a 431 before the app is involved.
- ``max_request_body_size``: bodies far over the app's upload limit are refused before being buffered.

waitress answers what it refuses itself (431, 413, 400) in plain text; on ``/api/`` routes the answer is
the API's one error shape instead, ``{"error": {"code", "message"}}`` (``_ApiChannel``), as the OpenAPI
document promises for every API error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.task import ErrorTask

from .errors import error_body

# the limits, with why; every one can be changed by create_server's keywords
CONNECTION_LIMIT = 1000
CHANNEL_TIMEOUT = 30  # seconds without a byte either way before an idle connection is closed
MAX_HEADER_BYTES = 64 * 1024
RESERVED_FILES = 128  # descriptors kept for what the app opens (catalog, images, thumbnails, logs)


def create_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int = 8,
    connection_limit: int = CONNECTION_LIMIT,
    channel_timeout: int = CHANNEL_TIMEOUT,
    **waitress_options: Any,
) -> Any:
    """A waitress server for ``app`` with the limits above (bound, not yet running: call ``.run()``)."""
    import waitress

    limit = fit_connection_limit(connection_limit)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "threads": threads,
        "ident": "babelsearch",
        "connection_limit": limit,
        "channel_timeout": channel_timeout,
        # timeouts are looked at this often, so an idle connection lives at most about 1.3 x the timeout
        "cleanup_interval": max(1, min(30, channel_timeout // 3)),
        "asyncore_use_poll": True,
        "max_request_header_size": MAX_HEADER_BYTES,
        "max_request_body_size": 4 * (app.config.get("MAX_CONTENT_LENGTH") or 16 * 2**20),
        **waitress_options,
    }
    server = waitress.create_server(app, **options)
    # one listening socket is a server of its own; several (``listen=``) are kept in its map
    for listener in [server, *getattr(server, "map", {}).values()]:
        if hasattr(listener, "channel_class"):
            listener.channel_class = _ApiChannel
    return server


# waitress' errors as the API names them (webui.errors.describe_error names Flask's the same way)
_ERROR_CODES = {413: "payload_too_large", 431: "request_header_fields_too_large", 400: "bad_request"}
_REQUEST_TARGET = re.compile(rb"\s*[A-Z]+ +(\S*)")


class _ApiAwareParser(HTTPRequestParser):
    """waitress' parser, remembering whether the request line named an ``/api/`` route: on a header
    too large waitress forgets the request line (it parses ``GET /`` in its place)."""

    api_route: bool | None = None  # None: not known yet (fewer bytes than the route prefix so far)

    def received(self, data: bytes) -> int:
        if self.api_route is None and not self.completed:
            head = (self.header_plus + data)[:64]
            match = _REQUEST_TARGET.match(head)
            if match and (len(match.group(1)) >= 5 or match.end() < len(head)):
                self.api_route = match.group(1).startswith(b"/api/")
            elif len(head) >= 64 or b"\n" in head:
                self.api_route = False
        return super().received(data)


class _ApiErrorTask(ErrorTask):
    """waitress' own error answers; on an API route in the API's JSON error shape."""

    def execute(self) -> None:
        if not getattr(self.request, "api_route", False):
            super().execute()
            return
        error = self.request.error
        message = {
            431: f"the request line and headers are larger than the server reads ({MAX_HEADER_BYTES // 1024} KiB)",
            413: "the request body is larger than the server reads",
        }.get(error.code, f"{error.reason.lower()}: {error.body}")
        code = _ERROR_CODES.get(error.code, error.reason.lower().replace(" ", "_"))
        body = json.dumps(error_body(code, message)).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _ApiChannel(HTTPChannel):
    parser_class = _ApiAwareParser
    error_task_class = _ApiErrorTask


def fit_connection_limit(wanted: int) -> int:
    """``wanted``, or fewer when the process may not open that many descriptors (each connection is one).

    The soft limit on open files is raised towards the hard one first (often 1024 soft, far more hard)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to fit (and no poll(); waitress falls back to select)
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_FILES))
