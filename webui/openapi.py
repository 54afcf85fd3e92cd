"""The OpenAPI 3.1 document served at /api/openapi.json (a test checks it lists every route)."""

from __future__ import annotations

import functools
from typing import Any

from babelsearch.engine.options import MAX_K, MAX_QUERY_CHARS, MAX_REFINE_FACTOR
from babelsearch.engine.rerank import MARGIN_KS, RERANK_MODES

from .thumbs import THUMB_SIZES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/E{status}"} for status in statuses}


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False):
    return {"name": name, "in": where, "required": required, "schema": schema, "description": description}


ID = _param("image_id", "path", {"type": "integer", "minimum": 0}, "Catalog id of an image.", True)
K = _param("k", "query", {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}, "How many hits.")


@functools.cache
def openapi_document() -> dict[str, Any]:
    hits: dict[str, Any] = {
        "type": "object",
        "required": ["k", "took_ms", "results"],
        "properties": {
            "k": {"type": "integer"},
            "took_ms": {"type": "number"},
            "results": {"type": "array", "items": _ref("Hit")},
        },
    }
    error_responses = {
        f"E{status}": _json(_ref("Error"), text)
        for status, text in [
            (400, "Bad request: a parameter, the query or the uploaded image is invalid."),
            (404, "No image with that id, or its file is no longer on disk."),
            (413, "The upload is larger than the server accepts."),
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
                        _param("q", "query", {"type": "string", "maxLength": MAX_QUERY_CHARS}, "The query.", True),
                        K,
                        _param(
                            "offset",
                            "query",
                            {"type": "integer", "minimum": 0, "default": 0},
                            f"Skip this many hits (paging); k + offset <= {MAX_K}.",
                        ),
                        _param(
                            "lang",
                            "query",
                            {"type": "string"},
                            "The query's language (ISO 639), instead of detecting it.",
                        ),
                        _param(
                            "rerank",
                            "query",
                            {"enum": list(RERANK_MODES)},
                            "Candidate reranking; default: the index's (normally distance).",
                        ),
                        _param(
                            "margin_k",
                            "query",
                            {"enum": [str(k) for k in MARGIN_KS]},
                            "Neighbourhood size for reranking; default: the index's.",
                        ),
                        _param(
                            "nprobe",
                            "query",
                            {"type": "integer", "minimum": 1},
                            "Inverted lists scanned (IVF indexes); default: the index's.",
                        ),
                        _param(
                            "refine_factor",
                            "query",
                            {"type": "integer", "minimum": 1, "maximum": MAX_REFINE_FACTOR},
                            "k * this many candidates are re-scored exactly; default: the index's.",
                        ),
                    ],
                    "responses": {"200": _json(_ref("TextResults"), "Hits, best first.")} | _errors(400, 500, 503),
                }
            },
            "/api/similar/{image_id}": {
                "get": {
                    "summary": "More like this: images nearest to an indexed image (itself left out)",
                    "parameters": [ID, K],
                    "responses": {
                        "200": _json(
                            {**hits, "properties": {**hits["properties"], "id": {"type": "integer"}}},
                            "Hits, best first.",
                        )
                    }
                    | _errors(400, 404, 500, 503),
                }
            },
            "/api/search/image": {
                "post": {
                    "summary": "Search by an uploaded image",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": {"type": "string", "format": "binary"},
                                        "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": _json(hits, "Hits, best first.")} | _errors(400, 413, 500, 503),
                }
            },
            "/api/images/{image_id}": {
                "get": {
                    "summary": "An image's catalog record and links",
                    "parameters": [ID],
                    "responses": {"200": _json(_ref("Image"), "The catalog record.")} | _errors(404, 500, 503),
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Whether an index is loaded and searchable",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "status": {"const": "ok"},
                                    "images": {"type": "integer"},
                                    "model": {"type": "string"},
                                },
                            },
                            "Ready.",
                        )
                    }
                    | _errors(503),
                }
            },
            "/api/stats": {
                "get": {
                    "summary": "Index information and request counters",
                    "responses": {"200": _json({"type": "object"}, "Index manifest, counts and counters.")},
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1.")},
                }
            },
            "/images/{image_id}/thumb": {
                "get": {
                    "summary": "JPEG thumbnail of an indexed image",
                    "parameters": [
                        ID,
                        _param(
                            "size",
                            "query",
                            {"type": "integer", "enum": list(THUMB_SIZES), "default": THUMB_SIZES[0]},
                            "Longest side in pixels.",
                        ),
                    ],
                    "responses": {"200": {"description": "JPEG", "content": {"image/jpeg": {}}}}
                    | _errors(400, 404, 500, 503),
                }
            },
            "/images/{image_id}/file": {
                "get": {
                    "summary": "The indexed image file itself",
                    "parameters": [ID],
                    "responses": {"200": {"description": "The file's bytes", "content": {"image/*": {}}}}
                    | _errors(404, 500, 503),
                }
            },
        },
        "components": {
            "schemas": {
                "Hit": {
                    "type": "object",
                    "required": ["id", "path", "score", "cosine"],
                    "properties": {
                        "id": {"type": "integer"},
                        "path": {"type": "string"},
                        "score": {"type": "number", "description": "Ranking score (after any reranking)."},
                        "cosine": {"type": "number", "description": "Cosine similarity of query and image."},
                    },
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
                        "language": _ref("Language"),
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
