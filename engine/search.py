"""SearchEngine: text -> encoder -> candidates (shards) -> exact refine -> margin rerank -> hits."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import rerank as rr
from .bank import BANK_SETTINGS, RERANK_SETTINGS, read_image_terms
from .catalog import count_images, open_catalog, rows_by_ids
from .encoders import Encoder, get_encoder
from .errors import ImageNotFound, IncompatibleIndex, InvalidQuery
from .layout import (
    PRECOMPUTED_MODEL,
    Manifest,
    check_model,
    check_model_version,
    check_readable,
    read_manifest,
)
from .shards import ShardSet

MAX_QUERY_CHARS = 1000
MAX_K = 1000
MAX_REFINE_FACTOR = 100
MAX_CANDIDATES = 10_000  # k * refine_factor is capped here: refine cost stays bounded for large k


@dataclass
class Hit:
    """One search result: the catalog id, the image path, its final (reranked) score, its raw
    cosine to the query, and the catalog row."""

    id: int
    path: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    cosine: float | None = None

    def to_json(self) -> dict[str, Any]:
        cosine = self.score if self.cosine is None else self.cosine
        return {
            "id": self.id,
            "path": self.path,
            "score": round(float(self.score), 6),
            "cosine": round(float(cosine), 6),
        }


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
            if encoder is not None:
                check_model_version(manifest, encoder, index_dir)
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
            encoder = get_encoder(self.manifest.model)
            check_model_version(self.manifest, encoder, self.index_dir)
            self._encoder = encoder
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
        # image queries rank by plain cosine: the query-bank terms describe closeness to text queries
        hits = self.search_vectors(
            vector, k=min(k + 1, MAX_K), rerank="none", nprobe=nprobe, refine_factor=refine_factor
        )[0]
        return [hit for hit in hits if hit.id != int(image_id)][:k]

    def search_image(
        self, image: Any, k: int = 10, nprobe: int | None = None, refine_factor: int | None = None
    ) -> list[Hit]:
        """The k images nearest to a query image (a decoded PIL image, any size or mode)."""
        _check_k(k)
        vectors = self.encoder.encode_images([image.convert("RGB")])
        return self.search_vectors(vectors, k=k, rerank="none", nprobe=nprobe, refine_factor=refine_factor)[0]

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
        self,
        text: str,
        k: int = 10,
        rerank: str | None = None,
        margin_k: int | str | None = None,
        nprobe: int | None = None,
        refine_factor: int | None = None,
    ) -> list[Hit]:
        """The k best images for one text query, in any language (parameters: see search_vectors)."""
        return self.search_many(
            [text], k=k, rerank=rerank, margin_k=margin_k, nprobe=nprobe, refine_factor=refine_factor
        )[0]

    def search_many(
        self,
        texts: list[str],
        k: int = 10,
        rerank: str | None = None,
        margin_k: int | str | None = None,
        nprobe: int | None = None,
        refine_factor: int | None = None,
    ) -> list[list[Hit]]:
        """The k best images for each of several text queries (encoded in one batch)."""
        _check_k(k)
        for text in texts:
            _check_text(text)
        if not texts:
            return []
        vectors = self.encoder.encode_texts(list(texts))
        return self.search_vectors(
            vectors, k=k, rerank=rerank, margin_k=margin_k, nprobe=nprobe, refine_factor=refine_factor
        )

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        rerank: str | None = None,
        margin_k: int | str | None = None,
        nprobe: int | None = None,
        refine_factor: int | None = None,
    ) -> list[list[Hit]]:
        """The k best images for each query vector (already in the index's space).

        All parameters apply to this call only; None takes the index's defaults (manifest):
        ``rerank`` is "margin", "distance", "csls" or "none" and ``margin_k`` its neighbourhood size
        (1-16, 32, 64, 128, 256 or "all"; see ``rerank_defaults``); ``nprobe`` is the number of
        inverted lists scanned; ``refine_factor``: k * refine_factor candidates (at most
        MAX_CANDIDATES) are re-scored exactly from the stored vectors.
        """
        _check_k(k)
        mode, margin_k, rerank_pool = self._rerank_params(rerank, margin_k)
        nprobe = self.default_nprobe if nprobe is None else _check_positive("nprobe", nprobe)
        refine_factor = (
            self.default_refine_factor
            if refine_factor is None
            else _check_positive("refine_factor", refine_factor, MAX_REFINE_FACTOR)
        )
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.dim:
            raise InvalidQuery(f"query vectors have dim {vectors.shape[-1]}, index has {self.manifest.dim}")
        pool = k if mode == "none" else max(k, rerank_pool)
        # 1. candidates: approximate scores from the shards' codes
        # refine covers k * refine_factor candidates, and at least the whole rerank pool
        n_candidates = max(pool, min(k * refine_factor, MAX_CANDIDATES))
        scores, ids = self._shards.candidates(vectors, n_candidates, nprobe=nprobe)
        # 2. refine: exact scores from the stored vectors, best first
        if refine_factor > 1:
            scores, ids = self._shards.refine(vectors, ids)
        scores, ids = scores[:, :pool], ids[:, :pool]
        cosines = scores
        # 3. rerank the exact cosines of the pool with the margin, then cut to k
        if mode != "none":
            scores, ids, cosines = self._rerank_candidates(scores, ids, mode, margin_k, k)
        # 4. hits
        return self._hits(scores[:, :k], ids[:, :k], cosines[:, :k])

    def _hits(self, scores: np.ndarray, ids: np.ndarray, cosines: np.ndarray) -> list[list[Hit]]:
        rows = rows_by_ids(self._catalog, ids[ids >= 0].ravel().tolist())
        results: list[list[Hit]] = []
        for row_scores, row_ids, row_cosines in zip(scores, ids, cosines):
            hits = []
            for score, image_id, cosine in zip(row_scores, row_ids, row_cosines):
                row = rows.get(int(image_id))
                # a vector whose catalog row is gone (interrupted write, removal) is never shown
                if image_id < 0 or row is None:
                    continue
                hits.append(
                    Hit(id=int(image_id), path=row["path"], score=float(score), metadata=row, cosine=float(cosine))
                )
            results.append(hits)
        return results

    # -- rerank candidates (engine.rerank, engine.bank) -------------------------------------------
    @property
    def rerank_defaults(self) -> dict[str, Any]:
        """mode, margin_k and candidates used when a call does not say; "none" without a query bank."""
        recorded = self.manifest.settings.get(RERANK_SETTINGS, {})
        has_bank = self._has_bank_terms
        return {
            "mode": recorded.get("mode", rr.DEFAULT_RERANK) if has_bank else "none",
            "margin_k": recorded.get("margin_k", rr.DEFAULT_MARGIN_K),
            "candidates": int(recorded.get("candidates", rr.DEFAULT_CANDIDATES)),
        }

    @property
    def _has_bank_terms(self) -> bool:
        # terms stored for another list of k (another babelsearch version) cannot be read as ours
        bank = self.manifest.settings.get(BANK_SETTINGS)
        return bool(bank) and bank.get("margin_ks") == list(rr.MARGIN_KS)

    def _rerank_params(self, rerank: str | None, margin_k: int | str | None) -> tuple[str, int | str, int]:
        defaults = self.rerank_defaults
        mode = defaults["mode"] if rerank is None else rerank
        if mode not in rr.RERANK_MODES:
            raise InvalidQuery(f"rerank must be one of {', '.join(rr.RERANK_MODES)}, got {mode!r}")
        margin_k = defaults["margin_k"] if margin_k is None else margin_k
        try:
            rr.check_margin_k(margin_k)
        except ValueError:
            raise InvalidQuery(f"margin_k must be 1 to 16, 32, 64, 128, 256 or 'all', got {margin_k!r}") from None
        if mode != "none" and not self._has_bank_terms:
            raise InvalidQuery(
                f"rerank={mode!r} needs query-bank terms that {self.index_dir} lacks (built before them, "
                f"or by another version): run `babelsearch bank update {self.index_dir}`"
            )
        return mode, margin_k, max(int(defaults["candidates"]), 1)

    def _rerank_candidates(
        self, cosines: np.ndarray, ids: np.ndarray, mode: str, margin_k: int | str, k: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        unique, inverse = np.unique(ids, return_inverse=True)
        stored = read_image_terms(self._catalog, unique[unique >= 0].tolist())
        # an image indexed but not yet given its terms (interrupted build) counts as a typical one
        typical = np.asarray(self.manifest.settings[BANK_SETTINGS]["mean_terms"], dtype=np.float32)
        column = rr.ladder_column(margin_k)
        table = np.array([stored.get(int(i), typical)[column] for i in unique], dtype=np.float32)
        image_term = table[inverse.reshape(ids.shape)]
        return rr.rerank(cosines, ids, image_term, mode, margin_k, keep=k)


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
