"""SearchEngine: text -> encoder -> shards -> hits with catalog metadata."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import count_images, open_catalog, rows_by_ids
from .encoders import Encoder, get_encoder
from .errors import InvalidQuery
from .layout import Manifest, check_model, read_manifest
from .shards import ShardSet

MAX_QUERY_CHARS = 1000
MAX_K = 1000


@dataclass
class Hit:
    """One search result: the catalog id, the image path, its score and the catalog row."""

    id: int
    path: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "score": round(float(self.score), 6)}


class SearchEngine:
    """Read-only access to one index directory. Safe to share between threads."""

    def __init__(
        self, index_dir: Path, manifest: Manifest, shards: ShardSet, encoder: Encoder | None = None
    ) -> None:
        self.index_dir = index_dir
        self.manifest = manifest
        self._shards = shards
        self._encoder = encoder
        self._local = threading.local()

    @classmethod
    def open(
        cls, index_dir: str | os.PathLike, model: str | None = None, encoder: Encoder | None = None
    ) -> "SearchEngine":
        """Open an index; ``model`` (a spec) must match the one it was built with, if given."""
        index_dir = Path(index_dir)
        manifest = read_manifest(index_dir)
        check_model(manifest, model if model is not None else getattr(encoder, "name", None), index_dir)
        return cls(index_dir, manifest, ShardSet.open(index_dir, manifest), encoder)

    # -- properties ------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = get_encoder(self.manifest.model)
        return self._encoder

    @property
    def _catalog(self):
        # one read-only SQLite connection per thread
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_catalog(self.index_dir, readonly=True)
        return db

    @property
    def count(self) -> int:
        return count_images(self._catalog)

    def info(self) -> dict[str, Any]:
        return {**self.manifest.to_json(), "catalog_images": self.count, "vectors": self._shards.ntotal}

    # -- searching -------------------------------------------------------------------------------
    def search(self, text: str, k: int = 10) -> list[Hit]:
        """The k best images for one text query, in any language."""
        return self.search_many([text], k=k)[0]

    def search_many(self, texts: list[str], k: int = 10) -> list[list[Hit]]:
        """The k best images for each of several text queries (encoded in one batch)."""
        _check_k(k)
        for text in texts:
            _check_text(text)
        if not texts:
            return []
        return self.search_vectors(self.encoder.encode_texts(list(texts)), k=k)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """The k best images for each query vector (already in the index's space)."""
        _check_k(k)
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.manifest.dim:
            raise InvalidQuery(f"query vectors have dim {vectors.shape[1]}, index has {self.manifest.dim}")
        scores, ids = self._shards.search(vectors, k)
        rows = rows_by_ids(self._catalog, ids[ids >= 0].ravel().tolist())
        results: list[list[Hit]] = []
        for row_scores, row_ids in zip(scores, ids):
            hits = []
            for score, image_id in zip(row_scores, row_ids):
                row = rows.get(int(image_id))
                # a vector whose catalog row is gone (interrupted write, removal) is never shown
                if image_id < 0 or row is None:
                    continue
                hits.append(Hit(id=int(image_id), path=row["path"], score=float(score), metadata=row))
            results.append(hits)
        return results


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidQuery(f"k must be an integer from 1 to {MAX_K}, got {k!r}")


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise InvalidQuery(f"a query must be text, got {type(text).__name__}")
    if not text.strip():
        raise InvalidQuery("the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"the query is too long ({len(text)} characters; at most {MAX_QUERY_CHARS})")
