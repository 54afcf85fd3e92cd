"""A small HTTP client for a babelsearch server: standard library only (no torch, faiss, numpy, Flask).

    from babelsearch.webui.client import Client

    client = Client("http://127.0.0.1:8000", timeout=10)
    for hit in client.search("ein Hund im Schnee", k=10):
        print(hit.id, hit.score, hit.path)
    client.similar(hits[0].id, k=5)           # more like this
    client.search_image("query.jpg", k=5)     # search by an image file
    client.search("beach", folder="2024/summer", after="2024-06-01", type="jpeg", collapse=False)

Every call takes what the server's API takes, under the same names as ``SearchEngine.search``: nprobe,
refine_factor, the filters (folder and exclude: a folder or a list of them; after and before: an ISO
date or a ``datetime.date``; orientation, min_width, min_height; type: a format or a list; or all of them
as one ``where=``, a ``babelsearch.Where`` or a dict of those names), min_score and collapse (on unless
False), and text searches also lang, rerank and margin_k. Values are checked by the server: a bad one is
a ``BadRequest`` with its message.

Every failure is a ``ClientError``: ``ConnectionFailed`` / ``Timeout`` when the server cannot be
reached in time, else an ``HTTPError`` subclass carrying the server's status, code and message.
"""

from __future__ import annotations

import datetime as dt
import json
import mimetypes
import os
import socket
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib import error, parse, request

__all__ = [
    "Client",
    "Hit",
    "SearchResult",
    "ClientError",
    "ConnectionFailed",
    "Timeout",
    "HTTPError",
    "BadRequest",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "Unavailable",
]


# -- errors ----------------------------------------------------------------------------------------
class ClientError(Exception):
    """Base class of everything the client raises."""


class ConnectionFailed(ClientError):
    """The server could not be reached (refused, unknown host, connection reset)."""


class Timeout(ConnectionFailed):
    """The server did not answer within the client's timeout."""


class HTTPError(ClientError):
    """The server answered with an error status; ``code`` and ``message`` come from its JSON body."""

    def __init__(self, status: int, code: str, message: str, url: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.url = status, code, message, url


class BadRequest(HTTPError):
    """400: a bad parameter, an invalid query (empty, too long) or an undecodable image."""


class NotFound(HTTPError):
    """404: no image with that id (or no such endpoint); 410: its file is no longer the indexed one."""


class PayloadTooLarge(HTTPError):
    """413: the uploaded image is larger than the server accepts."""


class ServerError(HTTPError):
    """5xx: the server failed."""


class Unavailable(ServerError):
    """503: the server runs but has no index loaded."""


# 410: an image whose file was replaced since it was indexed is, to a client, not there
_BY_STATUS: dict[int, type[HTTPError]] = {
    400: BadRequest,
    404: NotFound,
    410: NotFound,
    413: PayloadTooLarge,
    503: Unavailable,
}


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hit:
    """One result. ``relevant``: the server's calibrated "likely relevant" flag (None where it has none:
    image queries, an index without a query bank); ``similar``: ids of the near-duplicates folded into
    this hit (collapse), best first."""

    id: int
    path: str
    score: float
    cosine: float
    relevant: bool | None = None
    similar: tuple[int, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Hit:
        score = float(data["score"])
        relevant = data.get("relevant")
        return cls(
            int(data["id"]),
            str(data["path"]),
            score,
            float(data.get("cosine", score)),
            None if relevant is None else bool(relevant),
            tuple(int(i) for i in data.get("similar") or ()),
        )


@dataclass
class SearchResult:
    """A list of hits (iterate, index, len) with what the server said about the search."""

    hits: list[Hit]
    took_ms: float
    language: dict[str, Any] | None = None  # text searches: {"code", "name", "confidence", "source"}
    next_offset: int | None = None
    readings: list[str] = field(default_factory=list)  # text searches: how the query was read, if rewritten
    filters: dict[str, Any] | None = None  # the filters applied, under their parameter names (None: none)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __len__(self) -> int:
        return len(self.hits)

    def __getitem__(self, index):
        return self.hits[index]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResult:
        return cls(
            hits=[Hit.from_json(item) for item in data.get("results", [])],
            took_ms=float(data.get("took_ms", 0.0)),
            language=data.get("language"),
            next_offset=data.get("next_offset"),
            readings=[str(text) for text in data.get("readings") or []],
            filters=data.get("filters"),
            raw=data,
        )


# -- the client ------------------------------------------------------------------------------------
class Client:
    """Talks to one babelsearch server. Thread-safe: it keeps no per-request state."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout: float = 30.0) -> None:
        parsed = parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def search(
        self,
        query: str,
        k: int = 10,
        offset: int = 0,
        lang: str | None = None,
        rerank: str | None = None,
        margin_k: int | str | None = None,
        nprobe: int | None = None,
        refine_factor: int | None = None,
        *,
        where: Any = None,
        folder: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        after: str | dt.date | None = None,
        before: str | dt.date | None = None,
        orientation: str | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
        type: str | Iterable[str] | None = None,  # noqa: A002 (the API's name for it)
        min_score: float | None = None,
        collapse: bool | None = None,
    ) -> SearchResult:
        """The k best images for a text query in any language (``offset`` pages further); the options
        and filters as the module says (None: the server's default)."""
        params = [
            ("q", query),
            ("k", k),
            ("offset", offset),
            ("lang", lang),
            ("rerank", rerank),
            ("margin_k", margin_k),
            ("nprobe", nprobe),
            ("refine_factor", refine_factor),
            *_filters(where, locals()),  # the filter keywords, by name
            ("min_score", min_score),
            ("collapse", collapse),
        ]
        return SearchResult.from_json(self._request("GET", "/api/search", params))

    def duplicates(self, limit: int = 100) -> list[list[dict[str, Any]]]:
        """Groups of near-duplicate images, largest first, each a list of {"id", "path"}."""
        return self._request("GET", "/api/duplicates", [("limit", limit)])["groups"]

    def similar(
        self,
        image_id: int,
        k: int = 10,
        nprobe: int | None = None,
        refine_factor: int | None = None,
        *,
        where: Any = None,
        folder: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        after: str | dt.date | None = None,
        before: str | dt.date | None = None,
        orientation: str | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
        type: str | Iterable[str] | None = None,  # noqa: A002
        min_score: float | None = None,
        collapse: bool | None = None,
    ) -> SearchResult:
        """The k images most like an indexed one (it is left out), by plain cosine (no rerank)."""
        params = [
            ("k", k),
            ("nprobe", nprobe),
            ("refine_factor", refine_factor),
            *_filters(where, locals()),  # the filter keywords, by name
            ("min_score", min_score),
            ("collapse", collapse),
        ]
        return SearchResult.from_json(self._request("GET", f"/api/similar/{int(image_id)}", params))

    def search_image(
        self,
        image: str | os.PathLike | bytes,
        k: int = 10,
        filename: str | None = None,
        nprobe: int | None = None,
        refine_factor: int | None = None,
        *,
        where: Any = None,
        folder: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        after: str | dt.date | None = None,
        before: str | dt.date | None = None,
        orientation: str | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
        type: str | Iterable[str] | None = None,  # noqa: A002
        min_score: float | None = None,
        collapse: bool | None = None,
    ) -> SearchResult:
        """The k images most like an image file (a path, or the file's bytes), by plain cosine."""
        if isinstance(image, bytes):
            data, name = image, filename or "query"
        else:
            data, name = Path(image).read_bytes(), filename or Path(image).name
        fields = [
            ("k", k),
            ("nprobe", nprobe),
            ("refine_factor", refine_factor),
            *_filters(where, locals()),  # the filter keywords, by name
            ("min_score", min_score),
            ("collapse", collapse),
        ]
        body, content_type = _multipart(_encoded(fields), {"image": (name, data)})
        raw = self._request("POST", "/api/search/image", body=body, headers={"Content-Type": content_type})
        return SearchResult.from_json(raw)

    def image(self, image_id: int) -> dict[str, Any]:
        """An image's catalog record (path, size, sha256, ...) and its URLs."""
        return self._request("GET", f"/api/images/{int(image_id)}")

    def thumbnail(self, image_id: int, size: int = 256) -> bytes:
        """JPEG bytes of an image's thumbnail (size 256 or 1024)."""
        return self._request("GET", f"/images/{int(image_id)}/thumb", {"size": size}, raw=True)

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/api/health")

    def stats(self) -> dict[str, Any]:
        return self._request("GET", "/api/stats")

    # -- plumbing ----------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        params: list[tuple[str, Any]] | dict[str, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        url = self.base_url + path
        if params:
            url += "?" + parse.urlencode(_encoded(params.items() if isinstance(params, dict) else params))
        req = request.Request(url, data=body, method=method, headers={"Accept": "application/json", **(headers or {})})
        try:
            with request.urlopen(req, timeout=self.timeout) as response:
                payload = response.read()
        except error.HTTPError as exc:
            raise _http_error(exc, url) from None
        except TimeoutError as exc:
            raise Timeout(f"no answer from {self.base_url} within {self.timeout} s") from exc
        except error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise Timeout(f"no answer from {self.base_url} within {self.timeout} s") from exc
            raise ConnectionFailed(f"cannot reach {self.base_url}: {exc.reason}") from exc
        except (ConnectionError, OSError) as exc:
            raise ConnectionFailed(f"cannot reach {self.base_url}: {exc}") from exc
        if raw:
            return payload
        try:
            return json.loads(payload)
        except ValueError as exc:
            raise ServerError(200, "bad_response", f"the server's answer is not JSON: {exc}", url) from None


def _http_error(exc: error.HTTPError, url: str) -> HTTPError:
    try:
        body = exc.read()
    except OSError:
        body = b""
    finally:
        exc.close()
    try:
        detail = json.loads(body)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", (body[:200].decode("utf-8", "replace").strip() or str(exc.reason))
    kind = _BY_STATUS.get(exc.code) or (ServerError if exc.code >= 500 else HTTPError)
    return kind(exc.code, code, message, url)


# the filters' parameter names, and the fields of a babelsearch.Where under them (Where.to_json's names)
FILTER_NAMES = ("folder", "exclude", "after", "before", "orientation", "min_width", "min_height", "type")


def _filters(where: Any, given: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The filter parameters of a call: ``where`` (a Where, or a dict of filter names) and the keywords,
    which win over it name by name."""
    if where is None:
        base: Mapping[str, Any] = {}
    elif isinstance(where, Mapping):
        base = where
    elif hasattr(where, "to_json"):  # a babelsearch.Where, without importing the engine here
        base = where.to_json()
    else:
        raise TypeError(f"where must be a babelsearch.Where or a dict of filters, got {where!r}")
    unknown = sorted(set(base) - set(FILTER_NAMES))
    if unknown:
        raise TypeError(f"unknown filter {unknown[0]!r} (filters: {', '.join(FILTER_NAMES)})")
    return [(name, given[name] if given.get(name) is not None else base.get(name)) for name in FILTER_NAMES]


def _encoded(params: Iterable[tuple[str, Any]]) -> list[tuple[str, str]]:
    """Parameters as the API writes them: None left out, a list as the name repeated, booleans as
    true/false, dates in ISO form (a time to the second)."""
    out: list[tuple[str, str]] = []
    for name, value in params:
        for item in [value] if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) else value:
            if item is None:
                continue
            if isinstance(item, bool):
                text = "true" if item else "false"
            elif isinstance(item, dt.datetime):
                # photos' times are local wall-clock times: an aware datetime is said in this machine's
                local = item.astimezone().replace(tzinfo=None) if item.tzinfo else item
                text = local.replace(microsecond=0).isoformat()
            elif isinstance(item, dt.date):
                text = item.isoformat()
            else:
                text = str(item)
            out.append((name, text))
    return out


def _multipart(fields: list[tuple[str, str]], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body (the standard library has no encoder for it)."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        kind = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        quoted = parse.quote(filename)  # any script in a file name, sent as ASCII
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{quoted}"\r\n'
            f"Content-Type: {kind}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
