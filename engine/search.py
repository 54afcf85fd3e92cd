"""SearchEngine: text -> encoder -> candidates (shards) -> exact refine -> margin rerank -> hits."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import rerank as rr
from .bank import BANK_SETTINGS, RERANK_SETTINGS, bank_vectors, read_image_terms
from .candidates import AllowedIds, scored_candidates
from .catalog import count_images, open_catalog, probe_catalog, rows_by_ids
from .encoders import Encoder
from .encoders.matryoshka import index_encoder
from .errors import ImageNotFound, InvalidQuery
from .filters import Where
from .hits import Hit
from .language import UNDETERMINED, Language, detect_language, given_language
from .layout import (
    PRECOMPUTED_MODEL,
    Manifest,
    check_model,
    check_model_version,
    check_readable,
    damaged,
    read_manifest,
)
from .options import IMAGE_KEYWORDS, MAX_K, MAX_QUERY_CHARS, MAX_REFINE_FACTOR, SearchOptions, check_text, from_call
from .relevance import Calibration, Calibrations, calibrate
from .shards import ShardSet

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack for **kwargs from Python 3.12 on

    from .options import ImageKeywords, SearchKeywords

# the query limits live with SearchOptions; named here too, where callers have long imported them
__all__ = [
    "MAX_CANDIDATES",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "MAX_REFINE_FACTOR",
    "Hit",
    "SearchEngine",
    "SearchOptions",
    "Where",
]

MAX_CANDIDATES = 10_000  # k * refine_factor is capped here: refine cost stays bounded for large k


class SearchEngine:
    """Read-only access to one index directory. Safe to share between threads."""

    def __init__(self, index_dir: Path, manifest: Manifest, shards: ShardSet, encoder: Encoder | None = None) -> None:
        self.index_dir = index_dir
        self.manifest = manifest
        self.shards = shards  # the vectors (engine.shards.ShardSet), read-only like the rest
        self._encoder = encoder
        self._local = threading.local()
        # per engine, so per generation: a new one (reopen) starts afresh
        self._allowed = AllowedIds()
        self._calibrations = Calibrations()

    @classmethod
    def open(
        cls, index_dir: str | os.PathLike, model: str | None = None, encoder: Encoder | None = None
    ) -> SearchEngine:
        """Open an index; ``model`` (a spec) must match the one it was built with, if given.

        A damaged index (a file missing, unreadable or disagreeing with the manifest; a manifest naming
        files outside the directory) raises IndexDamaged naming the file and the way out."""
        index_dir = Path(index_dir)
        asked = model if model is not None or encoder is None else encoder.name
        for attempt in range(3):
            manifest = read_manifest(index_dir)
            check_readable(manifest, index_dir)
            check_model(manifest, asked, index_dir)
            if encoder is not None:
                check_model_version(manifest, encoder, index_dir)
            probe_catalog(index_dir)
            try:
                shards = ShardSet.open(index_dir, manifest)
            except FileNotFoundError as exc:
                # a concurrent `index` run replaced a shard between our manifest read and the open
                if attempt == 2:
                    name = Path(exc.filename or str(exc))
                    shown = name.relative_to(index_dir) if name.is_relative_to(index_dir) else name
                    raise damaged(index_dir, str(shown), "is missing") from None
                continue
            return cls(index_dir, manifest, shards, encoder)
        raise AssertionError("unreachable")

    def reopen(self) -> SearchEngine:
        """A new engine for the same directory as its manifest is now (a newer generation, committed by
        an ``index`` run), sharing this engine's encoder if it is loaded, so the model is not loaded twice.
        This engine is left as it was: searches already running on it finish on the old generation. A
        directory rebuilt with another model is refused (IncompatibleIndex), like ``open(model=...)``."""
        return type(self).open(self.index_dir, model=self.manifest.model, encoder=self._encoder)

    # -- properties ------------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            if self.manifest.model == PRECOMPUTED_MODEL:
                raise InvalidQuery(
                    f"index {self.index_dir} holds precomputed vectors and no model to encode text; "
                    "search it with vectors (SearchEngine.search_vectors), or index with --model"
                )
            # the index's --dim (Matryoshka truncation), if it was built with one
            encoder = index_encoder(self.manifest.model, self.manifest.settings)
            check_model_version(self.manifest, encoder, self.index_dir)
            self._encoder = encoder
        return self._encoder

    @property
    def catalog(self) -> Any:
        """The catalog (sqlite-utils Database), read-only, one connection per thread: for reads the
        engine's methods do not offer (engine.duplicate_scan, scripts); never written through."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_catalog(self.index_dir, readonly=True)
        return db

    @property
    def count(self) -> int:
        """Images this generation holds: catalog rows up to the highest id its manifest commits (rows
        above it are of vectors a run wrote before its manifest and never committed: never shown)."""
        highest = max((store.last for store in self.shards.stores), default=-1)
        return count_images(self.catalog, up_to=highest)

    def info(self) -> dict[str, Any]:
        return {**self.manifest.to_json(), "catalog_images": self.count, "vectors": self.shards.ntotal}

    # -- by id, by image, paging (used by the web UI; plain calls like the rest) ----------------
    def get(self, image_id: int) -> dict[str, Any] | None:
        """The catalog row of one image (id, path, bytes, mtime, sha256, width, height), or None."""
        if not _is_id(image_id):
            return None
        return rows_by_ids(self.catalog, [int(image_id)]).get(int(image_id))

    def search_page(
        self,
        text: str,
        k: int | None = None,
        offset: int = 0,
        *,
        options: SearchOptions | None = None,
        **kw: Unpack[SearchKeywords],
    ) -> list[Hit]:
        """Hits offset .. offset+k-1 of a text query (the options as for ``search``)."""
        if not _is_int(offset) or offset < 0:
            raise InvalidQuery(f"offset must be a whole number >= 0, got {offset!r}")
        options = from_call(options, k, kw)
        if options.k + offset > MAX_K:
            raise InvalidQuery(f"k + offset must be at most {MAX_K}, got {options.k + offset}")
        # the top k+offset, sliced: the same ranking whatever the page size
        return self._search(self._encode([text], options.lang), options, k=options.k + offset)[0][offset:]

    def similar(
        self, image_id: int, k: int | None = None, *, options: SearchOptions | None = None, **kw: Unpack[ImageKeywords]
    ) -> list[Hit]:
        """The k images nearest to an indexed image ("more like this"), the image itself left out.

        Image queries rank by plain cosine: the rerank and margin_k of ``options`` do not apply."""
        options = from_call(options, k, kw, IMAGE_KEYWORDS)
        missing = ImageNotFound(f"no image with id {image_id!r} in {self.index_dir}")
        if not _is_id(image_id):
            raise missing
        try:
            vector = self.shards.vectors_for_ids([int(image_id)])
        except KeyError:
            raise missing from None
        hits = self._search(vector, options, k=min(options.k + 1, MAX_K), plain=True, leave_out=int(image_id))[0]
        return hits[: options.k]

    def search_image(
        self, image: Any, k: int | None = None, *, options: SearchOptions | None = None, **kw: Unpack[ImageKeywords]
    ) -> list[Hit]:
        """The k images nearest to a query image (a decoded PIL image, any size or mode), by plain cosine."""
        options = from_call(options, k, kw, IMAGE_KEYWORDS)
        vectors = self.encoder.encode_images([image.convert("RGB")])
        return self._search(vectors, options, plain=True)[0]

    @property
    def default_nprobe(self) -> int | None:
        """Inverted lists probed per query unless a call says otherwise (None: exact shards)."""
        nprobe = self.manifest.settings.get("nprobe")
        return int(nprobe) if nprobe and self.shards.nlist else None

    @property
    def default_refine_factor(self) -> int:
        """Candidates per wanted result that are re-scored exactly (1: no refine)."""
        return int(self.manifest.settings.get("refine_factor", 1))

    # -- searching -------------------------------------------------------------------------------
    def search(
        self, text: str, k: int | None = None, *, options: SearchOptions | None = None, **kw: Unpack[SearchKeywords]
    ) -> list[Hit]:
        """The k (default 10) best images for one text query, in any language.

        The options come as keywords (``rerank``, ``margin_k``, ``nprobe``, ``refine_factor``) or as one
        ``options=SearchOptions(...)``, not both; None takes the index's default (see SearchOptions).
        ``lang`` (ISO 639; None: detected, see ``query_language``) reaches models that read a language."""
        options = from_call(options, k, kw)
        return self._search(self._encode([text], options.lang), options)[0]

    def search_many(
        self,
        texts: list[str],
        k: int | None = None,
        *,
        options: SearchOptions | None = None,
        **kw: Unpack[SearchKeywords],
    ) -> list[list[Hit]]:
        """The k best images for each of several text queries (encoded in one batch; ``lang``, if given,
        is every query's language, else each one's is detected)."""
        options = from_call(options, k, kw)
        return self._search(self._encode(list(texts), options.lang), options) if texts else []

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int | None = None,
        *,
        options: SearchOptions | None = None,
        **kw: Unpack[SearchKeywords],
    ) -> list[list[Hit]]:
        """The k best images for each query vector (already in the index's space)."""
        return self._search(vectors, from_call(options, k, kw))

    def query_readings(self, text: str) -> list[str]:
        """How the model read a query it rewrote (babel-lite: the English glosses a query in Chinese
        characters is blended with), for people to see; [] when it was read as written."""
        check_text(text)
        return list(self.encoder.query_readings([text])[0])

    def relevance_calibration(self, rerank: str | None = None, margin_k: int | str | None = None) -> Calibration | None:
        """The score distribution "likely relevant" is judged against, for a text search with these
        rerank settings (None: the index's defaults); None for an index without a query bank."""
        return self._calibration(*self._rerank_params(SearchOptions(rerank=rerank, margin_k=margin_k)))

    def _calibration(self, mode: str, chosen_k: int | str, pool: int) -> Calibration | None:
        def pool_scores(queries: np.ndarray) -> np.ndarray:
            options = SearchOptions(k=min(max(pool, 10), MAX_K), rerank=mode, margin_k=chosen_k, refine_factor=2)
            rows = self._search(queries, options, flag=False)
            out = np.full((len(rows), options.k), np.nan)
            for i, row in enumerate(rows):
                out[i, : len(row)] = [hit.score for hit in row]
            return out

        def measure() -> Calibration | None:
            return calibrate(pool_scores, bank_vectors(self.index_dir), mode, chosen_k) if self.count else None

        return self._calibrations.get((mode, chosen_k), measure)

    def relevance_threshold(self, rerank: str | None = None, margin_k: int | str | None = None) -> float | None:
        """The final score from which a text search's hit is flagged "likely relevant" (None: unknown)."""
        calibration = self.relevance_calibration(rerank, margin_k)
        return None if calibration is None else calibration.threshold

    def query_language(self, text: str, lang: str | None = None) -> Language:
        """The language a text query is searched as: ``lang`` as given, else detected offline
        (engine.language). It is what a language-token model (NLLB) is given and what the API reports."""
        return given_language(lang) if lang else detect_language(check_text(text))

    def model_languages(self, texts: list[str], lang: str | None = None) -> list[str | None]:
        """Per text, the language as the model reads it (NLLB: the FLORES-200 token, such as deu_Latn;
        None for models that take no language)."""
        encoder = self.encoder
        if not encoder.accepts_languages:
            return [None] * len(texts)
        return list(encoder.text_languages(texts, self._languages(encoder, texts, lang)))

    def _languages(self, encoder: Encoder, texts: list[str], lang: str | None) -> list[str | None] | None:
        if lang is None and not encoder.language_tokens:
            return None  # a model that reads no language token: nothing worth detecting
        codes = [self.query_language(text, lang).code for text in texts]
        # undetermined: the encoder falls back to its default language
        return [None if code == UNDETERMINED else code for code in codes]

    def _encode(self, texts: list[str], lang: str | None = None) -> np.ndarray:
        for text in texts:
            check_text(text)
        encoder = self.encoder
        # a model that uses no languages is not given any: detecting them costs a fastText call per query
        if not encoder.accepts_languages:
            return encoder.encode_texts(texts)
        return encoder.encode_texts(texts, languages=self._languages(encoder, texts, lang))

    def _search(
        self,
        vectors: np.ndarray,
        options: SearchOptions,
        k: int | None = None,
        plain: bool = False,
        flag: bool = True,
        leave_out: int | None = None,
    ) -> list[list[Hit]]:
        """The one search path. ``options`` are already checked (a SearchOptions is valid once made);
        ``k`` (default options.k, at most MAX_K) is what a page or "more like this" needs, and ``plain``
        ranks by cosine alone: the query-bank terms describe closeness to text queries, not images.
        ``flag``: mark hits "likely relevant" (off while calibrating that very flag). ``leave_out``: an id
        never shown ("more like this" leaves out the image itself, before its copies are folded into it)."""
        wanted = options.k if k is None else k
        # folding near-duplicates needs hits to fold: look further than k, then keep k
        k = min(max(3 * wanted, wanted + 20), MAX_K) if options.collapse else wanted
        mode, margin_k, rerank_pool = self._rerank_params(options, plain)
        nprobe = self.default_nprobe if options.nprobe is None else options.nprobe
        refine_factor = self.default_refine_factor if options.refine_factor is None else options.refine_factor
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.ndim != 2 or vectors.shape[1] != self.manifest.dim:
            raise InvalidQuery(f"query vectors have dim {vectors.shape[-1]}, index has {self.manifest.dim}")
        allowed = self._allowed.get(self.catalog, options.where)
        if allowed is not None and not allowed.size:
            return [[] for _ in vectors]
        pool = k if mode == "none" else max(k, rerank_pool)
        # 1. candidates: approximate scores from the shards' codes;
        # refine covers k * refine_factor candidates (at most MAX_CANDIDATES), and at least the rerank pool
        n_candidates = max(pool, min(k * refine_factor, MAX_CANDIDATES))
        # 2. refine: exact scores from the stored vectors, best first (within the filter, if any)
        scores, ids = scored_candidates(
            self.shards, vectors, n_candidates, nprobe, refine_factor, allowed, wanted, keep=pool
        )
        cosines = scores
        # 3. rerank the exact cosines of the pool with the margin, then cut to k
        if mode != "none":
            scores, ids, cosines = self._rerank_candidates(scores, ids, mode, margin_k, k)
        # 4. hits: flagged, cut at min_score, near-duplicates folded
        rows = self._hits(scores[:, :k], ids[:, :k], cosines[:, :k])
        # image queries are not flagged: the calibration describes text queries
        calibration = self._calibration(mode, margin_k, rerank_pool) if flag and not plain else None
        threshold = None if calibration is None else calibration.threshold
        for row in rows:
            for hit in row:
                hit.relevant = None if threshold is None else bool(hit.score >= threshold)
        if leave_out is not None:
            rows = [[hit for hit in row if hit.id != leave_out] for row in rows]
        if options.min_score is not None:
            rows = [[hit for hit in row if hit.score >= options.min_score] for row in rows]
        if options.collapse:
            rows = [self._collapse(row, wanted) for row in rows]
        return [row[:wanted] for row in rows]

    def _collapse(self, row: list[Hit], k: int) -> list[Hit]:
        from .catalog import signatures_by_ids
        from .duplicates import DUPLICATE_THRESHOLD, collapse_hits

        if not row:
            return row
        ids = [hit.id for hit in row]
        vectors = self.shards.vectors_for_ids(ids)  # hits come from the shards: every id has its vector
        # pixel signatures where the catalog has them (rows indexed before have none: cosine alone decides)
        stored = signatures_by_ids(self.catalog, ids)
        return collapse_hits(row, vectors, DUPLICATE_THRESHOLD, k, [stored.get(i) for i in ids])

    def _hits(self, scores: np.ndarray, ids: np.ndarray, cosines: np.ndarray) -> list[list[Hit]]:
        rows = rows_by_ids(self.catalog, ids[ids >= 0].ravel().tolist())
        results: list[list[Hit]] = []
        # plain Python numbers: per-element numpy scalars cost more than the catalog lookup
        for row_scores, row_ids, row_cosines in zip(scores.tolist(), ids.tolist(), cosines.tolist()):
            hits = []
            for score, image_id, cosine in zip(row_scores, row_ids, row_cosines):
                row = rows.get(image_id)
                # a vector whose catalog row is gone (interrupted write, removal) is never shown
                if image_id < 0 or row is None:
                    continue
                hits.append(Hit(id=image_id, path=row["path"], score=score, metadata=row, cosine=cosine))
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
        bank = self.manifest.settings.get(BANK_SETTINGS) or {}
        return bank.get("margin_ks") == list(rr.MARGIN_KS)

    def _rerank_params(self, options: SearchOptions, plain: bool = False) -> tuple[str, int | str, int]:
        defaults = self.rerank_defaults
        if plain:
            return "none", defaults["margin_k"], 0
        mode = defaults["mode"] if options.rerank is None else options.rerank
        margin_k = defaults["margin_k"] if options.margin_k is None else options.margin_k
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
        stored = read_image_terms(self.catalog, unique[unique >= 0].tolist())
        # an image indexed but not yet given its terms (interrupted build) counts as a typical one
        typical = np.asarray(self.manifest.settings[BANK_SETTINGS]["mean_terms"], dtype=np.float32)
        column = rr.ladder_column(margin_k)
        table = np.array([stored.get(int(i), typical)[column] for i in unique], dtype=np.float32)
        image_term = table[inverse.reshape(ids.shape)]
        return rr.rerank(cosines, ids, image_term, mode, margin_k, keep=k)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_id(image_id: Any) -> bool:
    """Whether a value can be a catalog id (SQLite and FAISS ids are signed 64-bit, ours >= 0)."""
    return _is_int(image_id) and 0 <= image_id < 2**63
