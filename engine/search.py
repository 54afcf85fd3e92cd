"""SearchEngine: text -> encoder -> candidates (shards) -> exact refine -> [rerank] -> hits."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import count_images, open_catalog, rows_by_ids
from .encoders import Encoder, get_encoder
from .errors import ImageNotFound, IncompatibleIndex, InvalidQuery
from .layout import PRECOMPUTED_MODEL, Manifest, check_model, check_readable, read_manifest
from .shards import ShardSet

MAX_QUERY_CHARS = 1000
MAX_K = 1000
MAX_REFINE_FACTOR = 100
MAX_CANDIDATES = 10_000  # k * refine_factor is capped here: refine cost stays bounded for large k


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
        for attempt in range(3):
            manifest = read_manifest(index_dir)
            check_readable(manifest, index_dir)
            check_model(manifest, model if model is not None else getattr(encoder, "name", None), index_dir)
            try:
                shards = ShardSet.open(index_dir, manifest)
            except FileNotFoundError as exc:
                # a concurrent `index` run replaced a shard between our manifest read and the open
                if attempt == 2:
                    raise IncompatibleIndex(f"index {index_dir} is damaged: {exc} is missing") from None
                continue
            return cls(index_dir, manifest, shards, encoder)
        raise AssertionError("unreachable")

    # -- properties ------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            if self.manifest.model == PRECOMPUTED_MODEL:
                raise InvalidQuery(
                    f"index {self.index_dir} holds precomputed vectors and no model to encode text; "
                    "search it with vectors (SearchEngine.search_vectors), or index with --model"
                )
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

    # -- by id, by image, paging (used by the web UI; plain calls like the rest) ----------------
    def get(self, image_id: int) -> dict[str, Any] | None:
        """The catalog row of one image (id, path, bytes, mtime, sha256, width, height), or None."""
        if not _is_id(image_id):
            return None
        return rows_by_ids(self._catalog, [int(image_id)]).get(int(image_id))

    def search_page(self, text: str, k: int = 10, offset: int = 0, **options: Any) -> list[Hit]:
        """Hits offset .. offset+k-1 of a text query (``options`` go to ``search`` unchanged)."""
        if not isinstance(offset, (int, np.integer)) or isinstance(offset, bool) or offset < 0:
            raise InvalidQuery(f"offset must be a whole number >= 0, got {offset!r}")
        _check_k(k)
        if k + offset > MAX_K:
            raise InvalidQuery(f"k + offset must be at most {MAX_K}, got {k + offset}")
        # the top k+offset, sliced: the same ranking whatever the page size
        return self.search(text, k=k + offset, **options)[offset:]

    def similar(
        self, image_id: int, k: int = 10, nprobe: int | None = None, refine_factor: int | None = None
    ) -> list[Hit]:
        """The k images nearest to an indexed image ("more like this"), the image itself left out."""
        _check_k(k)
        missing = ImageNotFound(f"no image with id {image_id!r} in {self.index_dir}")
        if not _is_id(image_id):
            raise missing
        try:
            vector = self._shards.vectors_for_ids([int(image_id)])
        except KeyError:
            raise missing from None
        hits = self.search_vectors(vector, k=min(k + 1, MAX_K), nprobe=nprobe, refine_factor=refine_factor)[0]
        return [hit for hit in hits if hit.id != int(image_id)][:k]

    def search_image(
        self, image: Any, k: int = 10, nprobe: int | None = None, refine_factor: int | None = None
    ) -> list[Hit]:
        """The k images nearest to a query image (a decoded PIL image, any size or mode)."""
        _check_k(k)
        vectors = self.encoder.encode_images([image.convert("RGB")])
        return self.search_vectors(vectors, k=k, nprobe=nprobe, refine_factor=refine_factor)[0]

    @property
    def default_nprobe(self) -> int | None:
        """Inverted lists probed per query unless a call says otherwise (None: exact shards)."""
        nprobe = self.manifest.settings.get("nprobe")
        return int(nprobe) if nprobe and self._shards.nlist else None

    @property
    def default_refine_factor(self) -> int:
        """Candidates per wanted result that are re-scored exactly (1: no refine)."""
        return int(self.manifest.settings.get("refine_factor", 1))

    # -- searching -------------------------------------------------------------------------------
    def search(
        self, text: str, k: int = 10, nprobe: int | None = None, refine_factor: int | None = None
    ) -> list[Hit]:
        """The k best images for one text query, in any language (nprobe, refine_factor: see
        search_vectors)."""
        return self.search_many([text], k=k, nprobe=nprobe, refine_factor=refine_factor)[0]

    def search_many(
        self, texts: list[str], k: int = 10, nprobe: int | None = None, refine_factor: int | None = None
    ) -> list[list[Hit]]:
        """The k best images for each of several text queries (encoded in one batch)."""
        _check_k(k)
        for text in texts:
            _check_text(text)
        if not texts:
            return []
        vectors = self.encoder.encode_texts(list(texts))
        return self.search_vectors(vectors, k=k, nprobe=nprobe, refine_factor=refine_factor)

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        nprobe: int | None = None,
        refine_factor: int | None = None,
    ) -> list[list[Hit]]:
        """The k best images for each query vector (already in the index's space).

        ``nprobe`` (inverted lists scanned) and ``refine_factor`` (k * refine_factor candidates, at
        most MAX_CANDIDATES, are re-scored exactly) apply to this call only; they default to the
        manifest's settings.
        """
        _check_k(k)
        nprobe = self.default_nprobe if nprobe is None else _check_positive("nprobe", nprobe)
        refine_factor = (
            self.default_refine_factor
            if refine_factor is None
            else _check_positive("refine_factor", refine_factor, MAX_REFINE_FACTOR)
        )
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.dim:
            raise InvalidQuery(f"query vectors have dim {vectors.shape[-1]}, index has {self.manifest.dim}")
        # 1. candidates: approximate scores from the shards' codes
        n_candidates = max(k, min(k * refine_factor, MAX_CANDIDATES))
        scores, ids = self._shards.candidates(vectors, n_candidates, nprobe=nprobe)
        # 2. refine: exact scores from the stored vectors, best first
        if refine_factor > 1:
            scores, ids = self._shards.refine(vectors, ids)
        # 3. [rerank hook: re-orders the refined candidates before the cut to k]
        # 4. hits
        return self._hits(scores[:, :k], ids[:, :k])

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
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


def _check_positive(name: str, value: Any, most: int | None = None) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1 or (
        most is not None and value > most
    ):
        limit = f" from 1 to {most}" if most else " of at least 1"
        raise InvalidQuery(f"{name} must be an integer{limit}, got {value!r}")
    return int(value)


def _is_id(image_id: Any) -> bool:
    """Whether a value can be a catalog id (SQLite and FAISS ids are signed 64-bit, ours >= 0)."""
    return isinstance(image_id, (int, np.integer)) and not isinstance(image_id, bool) and 0 <= image_id < 2**63


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
