"""The OpenAPI 3.1 document served at /api/openapi.json (a test checks it lists every route).

The document and the server agree both ways: every request it allows is answered (2xx, or 404 for an
id that is not in the index, 503 without an index), and every request it does not allow is refused
with a 4xx (tests/test_api_fuzz.py runs schemathesis' checks over it). So the API reads each value
exactly (``k=`` or ``k=05`` is refused, not taken as the default), and what cannot be said in JSON
Schema is made true in the server instead (a page past rank MAX_K is cut short, not refused; a date
pattern admits real dates only; the longest query string allowed fits the server's request line). One
rule is in a description only, as JSON Schema cannot compare two values: after must be earlier than
before (else a 400 saying so).
"""

from __future__ import annotations

import functools
from typing import Any

from babelsearch.engine.filters import FILTER_PARAMS
from babelsearch.engine.options import MAX_K, MAX_QUERY_CHARS
from babelsearch.engine.rerank import MARGIN_KS, RERANK_MODES

from .openapi_schemas import (
    ID,
    NOT_ONLY_SPACE,
    OPTIONS,
    PLAIN_COSINE,
    UPLOAD_TYPES,
    K,
    error_refs,
    json_body,
    option_params,
    param,
    ref,
)
from .searching import LANG_CODE, MAX_LANG_CHARS
from .thumbs import THUMB_SIZES


@functools.cache
def openapi_document() -> dict[str, Any]:
    hits: dict[str, Any] = {
        "type": "object",
        "required": ["k", "took_ms", "filters", "results"],
        "properties": {
            "k": {"type": "integer"},
            "took_ms": {"type": "number"},
            "filters": {
                "anyOf": [ref("Filters"), {"type": "null"}],
                "description": "The filters applied, under their parameter names (null: none).",
            },
            "results": {"type": "array", "items": ref("Hit")},
        },
    }
    upload_options = {name: schema for name, schema, _ in OPTIONS}
    error_responses = {
        f"E{status}": json_body(ref("Error"), text)
        for status, text in [
            (400, "Bad request: a parameter, the query or the uploaded image is invalid."),
            (404, "No image with that id, or its file is no longer on disk."),
            (410, "The file at the indexed path is no longer the indexed file (replaced, a symlink, modified)."),
            (
                413,
                "The upload is larger than the server accepts, or the image would cost more pixels to decode than it decodes for a request.",
            ),
            (431, "The request line and headers are larger than the server reads (64 KiB; a long query fits)."),
            (500, "Unexpected server error."),
            (503, "No index is loaded."),
        ]
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "babelsearch",
            "version": "1",
            "description": "Cross-lingual image search over one index. Errors are "
            '{"error": {"code": ..., "message": ...}} with the matching HTTP status.',
        },
        "paths": {
            "/api/search": {
                "get": {
                    "summary": "Search by text, in any language",
                    "parameters": [
                        param(
                            "q",
                            "query",
                            {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": MAX_QUERY_CHARS,
                                "pattern": NOT_ONLY_SPACE,
                            },
                            "The query, in any language: not only spaces.",
                            True,
                        ),
                        K,
                        param(
                            "offset",
                            "query",
                            {"type": "integer", "minimum": 0, "maximum": MAX_K - 1, "default": 0},
                            f"Skip this many hits (paging). Ranks end at {MAX_K}: a page reaching past "
                            "it is cut short there.",
                        ),
                        param(
                            "lang",
                            "query",
                            {"type": "string", "maxLength": MAX_LANG_CHARS, "pattern": f"^(?:{LANG_CODE})?$"},
                            "The query's language (ISO 639, such as de or pt-BR), instead of detecting it; "
                            "empty: detected. Models that read a language (NLLB) are given it.",
                        ),
                        param(
                            "rerank",
                            "query",
                            {"enum": list(RERANK_MODES)},
                            "Candidate reranking; default: the index's (normally distance).",
                        ),
                        param(
                            "margin_k",
                            "query",
                            {"enum": [str(k) for k in MARGIN_KS]},
                            "Neighbourhood size for reranking; default: the index's.",
                        ),
                        *option_params(),
                    ],
                    "responses": {"200": json_body(ref("TextResults"), "Hits, best first.")}
                    | error_refs(400, 431, 500, 503),
                }
            },
            "/api/similar/{image_id}": {
                "get": {
                    "summary": "More like this: images nearest to an indexed image (itself left out)",
                    "description": "The image's stored vector is the query." + PLAIN_COSINE,
                    "parameters": [ID, K, *option_params()],
                    "responses": {
                        "200": json_body(
                            {**hits, "properties": {**hits["properties"], "id": {"type": "integer"}}},
                            "Hits, best first.",
                        )
                    }
                    | error_refs(400, 404, 500, 503),
                }
            },
            "/api/search/image": {
                "post": {
                    "summary": "Search by an uploaded image",
                    "description": "The options are form fields beside the image (the filters may repeat)."
                    + PLAIN_COSINE,
                    "requestBody": {
                        "required": True,
                        "description": "An image file (a file that does not decode as an image is a 400).",
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": {"type": "string", "format": "binary"},
                                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                                        **upload_options,
                                    },
                                },
                                "encoding": {"image": {"contentType": ", ".join(UPLOAD_TYPES)}},
                            }
                        },
                    },
                    "responses": {"200": json_body(hits, "Hits, best first.")} | error_refs(400, 413, 500, 503),
                }
            },
            "/api/duplicates": {
                "get": {
                    "summary": "Groups of near-duplicate images, largest first",
                    "description": "As `babelsearch duplicates --json`: each group's ids ascending; images without "
                    "a near-duplicate are not listed. Found once per index generation.",
                    "parameters": [
                        param(
                            "limit",
                            "query",
                            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                            "At most this many groups (the largest).",
                        )
                    ],
                    "responses": {
                        "200": json_body(
                            {
                                "type": "object",
                                "required": ["total", "groups"],
                                "properties": {
                                    "total": {"type": "integer", "minimum": 0},
                                    "groups": {
                                        "type": "array",
                                        "items": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "required": ["id", "path"],
                                                "properties": {"id": {"type": "integer"}, "path": {"type": "string"}},
                                            },
                                        },
                                    },
                                },
                            },
                            "The groups.",
                        )
                    }
                    | error_refs(400, 500, 503),
                }
            },
            "/api/images/{image_id}": {
                "get": {
                    "summary": "An image's catalog record and links",
                    "parameters": [ID],
                    "responses": {"200": json_body(ref("Image"), "The catalog record.")} | error_refs(404, 500, 503),
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Whether an index is loaded and searchable",
                    "responses": {
                        "200": json_body(
                            {
                                "type": "object",
                                "required": ["status", "images", "model", "generation"],
                                "properties": {
                                    "status": {"const": "ok"},
                                    "images": {"type": "integer"},
                                    "model": {"type": "string"},
                                    "generation": {
                                        "type": "number",
                                        "description": "When the served index generation was committed (Unix time).",
                                    },
                                },
                            },
                            "Ready.",
                        )
                    }
                    | error_refs(503),
                }
            },
            "/api/stats": {
                "get": {
                    "summary": "Index information and request counters",
                    "responses": {"200": json_body({"type": "object"}, "Index manifest, counts and counters.")},
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": json_body({"type": "object"}, "OpenAPI 3.1.")},
                }
            },
            "/images/{image_id}/thumb": {
                "get": {
                    "summary": "JPEG thumbnail of an indexed image",
                    "parameters": [
                        ID,
                        param(
                            "size",
                            "query",
                            {"type": "integer", "enum": list(THUMB_SIZES), "default": THUMB_SIZES[0]},
                            "Longest side in pixels.",
                        ),
                    ],
                    "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}}}
                    | error_refs(400, 404, 410, 413, 500, 503),
                }
            },
            "/images/{image_id}/file": {
                "get": {
                    "summary": "The indexed image file itself",
                    "parameters": [ID],
                    "responses": {
                        "200": {
                            "description": "The file's bytes (application/octet-stream for formats a browser "
                            "should not be told are images).",
                            "content": {"image/*": {}, "application/octet-stream": {}},
                        }
                    }
                    | error_refs(404, 410, 500, 503),
                }
            },
        },
        "components": {
            "schemas": {
                "Hit": {
                    "type": "object",
                    "required": ["id", "path", "score", "cosine", "relevant", "similar"],
                    "properties": {
                        "id": {"type": "integer"},
                        "path": {"type": "string"},
                        "score": {"type": "number", "description": "Ranking score (after any reranking)."},
                        "cosine": {"type": "number", "description": "Cosine similarity of query and image."},
                        "relevant": {
                            "type": ["boolean", "null"],
                            "description": "Likely relevant, by the index's calibrated score threshold (text "
                            "queries); null where there is none (image queries, an index without a query bank).",
                        },
                        "similar": {
                            "type": "array",
                            "items": {"type": "integer"},
                            "description": "Ids of the near-duplicates folded into this hit (collapse), best first.",
                        },
                    },
                },
                "Filters": {
                    "type": "object",
                    "properties": {name: schema for name, schema, _ in OPTIONS if name in FILTER_PARAMS},
                    "additionalProperties": False,
                },
                "Language": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "description": "ISO 639 code; 'und' if undetermined."},
                        "name": {"type": "string"},
                        "confidence": {"type": "number"},
                        "source": {"enum": ["model", "script", "given", "none"]},
                    },
                },
                "TextResults": {
                    **hits,
                    "properties": {
                        **hits["properties"],
                        "query": {"type": "string"},
                        "offset": {"type": "integer"},
                        "language": ref("Language"),
                        "readings": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "How the query was read when the model rewrote it (e.g. the English "
                            "glosses of a Chinese-character query); empty when it was read as written.",
                        },
                        "next_offset": {"type": ["integer", "null"], "description": "Offset of the next page."},
                    },
                },
                "Image": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "path": {"type": "string"},
                        "name": {"type": "string"},
                        "bytes": {"type": "integer"},
                        "mtime": {"type": "number"},
                        "sha256": {"type": "string"},
                        "width": {"type": "integer"},
                        "height": {"type": "integer"},
                        "added": {"type": "number"},
                        "thumb_url": {"type": "string"},
                        "file_url": {"type": "string"},
                        "page_url": {"type": "string"},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
            },
            "responses": error_responses,
        },
    }
