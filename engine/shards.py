"""Open an index's shards and search them together with per-call parameters.

Every shard of an IVF index was filled from the same trained index, so their inverted lists are
combined at open time into one searchable index (the recipe of faiss' ``contrib/ondisk.py``): one
coarse quantisation and one list scan per query, exactly the results an unsharded index gives.
Flat shards are searched one by one and their top-k lists merged.

Each shard keeps its vectors beside it (``*.vectors.npy``, memory-mapped, rows sorted by id in
``*.ids.npy``): they re-score candidates exactly (refine) and serve ``vectors_for_ids`` and
``iter_vectors`` without holding float vectors in RAM. The refine is one call into a compiled kernel
(engine/_refine.c) where the install built it, else numpy gathers and faiss scores (engine/scorer.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from . import scorer as scoring
from .ivf import combine_ivf_shards, id_selector, is_ivf, ivf_search_params, merge_results, read_ivf_shard
from .layout import Manifest, ShardInfo, damaged
from .scorer import SCORER_DTYPES, Scorer, scorer_for

# candidate rows gathered at once: bounds a batch's (queries x candidates, dim) block to tens of MB
REFINE_ROWS = 32_768
# allowed ids scored per block by exact_among (the refine's scorer holds one block's rows)
_EXACT_BLOCK = 8192


@dataclass
class RefineStore:
    """One shard's ids (sorted int64) and vectors (float16/float32 rows), memory-mapped."""

    ids: np.ndarray
    vectors: np.ndarray
    # the first and last id, and whether the ids between are all here (no removals): then an id's row is
    # its offset from the first, with no search (read once: each read of a mapped array costs a lookup)
    first: int = field(init=False)
    last: int = field(init=False)
    consecutive: bool = field(init=False)

    def __post_init__(self) -> None:
        self.first, self.last = (int(self.ids[0]), int(self.ids[-1])) if len(self.ids) else (0, -1)
        self.consecutive = self.last - self.first + 1 == len(self.ids)

    @classmethod
    def open(cls, ids_path: Path, vectors_path: Path) -> RefineStore:
        # plain ndarray views of the maps: np.memmap's subclass hooks cost more than the lookups
        return cls(
            np.load(ids_path, mmap_mode="r").view(np.ndarray),
            np.load(vectors_path, mmap_mode="r").view(np.ndarray),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def locate(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of wanted ids held here, their rows); binary search touches a few pages only."""
        found, rows = self.positions(wanted)
        return found, rows[found]

    def positions(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of wanted ids held here, a row for every wanted id: its own where held, else 0)."""
        if not len(self.ids) or not len(wanted):
            return np.zeros(len(wanted), bool), np.zeros(len(wanted), np.int64)
        if self.consecutive:
            found = (wanted >= self.first) & (wanted <= self.last)
            return found, np.where(found, wanted - self.first, 0)
        # sorted keys: numpy then narrows each binary search from the last one (5x fewer cache misses)
        order = np.argsort(wanted, kind="stable")
        rows = np.empty(len(wanted), np.int64)
        rows[order] = np.searchsorted(self.ids, wanted[order])
        rows = np.minimum(rows, len(self.ids) - 1)
        found = np.asarray(self.ids[rows]) == wanted
        rows[~found] = 0
        return found, rows

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of the given rows as float32."""
        return self.vectors[rows].astype(np.float32)


@dataclass
class ShardSet:
    """The shards of one index, loaded for searching (never mutated by a search)."""

    dim: int
    stores: list[RefineStore]
    ivf_index: Any = None  # all IVF shards combined into one faiss index
    flat_indexes: list | None = None  # or: exact shards, searched one by one and merged
    # per-call IVF parameters by nprobe, made once (read-only to faiss, so threads share them)
    _params: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def open(cls, index_dir: str | os.PathLike, manifest: Manifest) -> ShardSet:
        """Every shard of ``manifest``; a file that is missing raises FileNotFoundError (a concurrent run may
        have replaced it: the caller reads the manifest again), one that cannot be used raises IndexDamaged."""
        index_dir = Path(index_dir)
        for shard in manifest.shards:
            for name in (shard.file, shard.ids, shard.vectors):
                if not name or not (index_dir / name).is_file():
                    raise FileNotFoundError(index_dir / str(name))
        stores = [open_store(index_dir, manifest, s) for s in manifest.shards]
        if manifest.factory != "Flat" and manifest.shards:
            indexes = [read_shard_index(index_dir, manifest, s, mmap=True) for s in manifest.shards]
            try:
                combined = combine_ivf_shards(indexes)
            except (RuntimeError, ValueError) as exc:
                raise damaged(index_dir, "shards/", f"do not fit together ({exc})") from None
            return cls(manifest.dim, stores, ivf_index=combined)
        return cls(
            manifest.dim, stores, flat_indexes=[read_shard_index(index_dir, manifest, s) for s in manifest.shards]
        )

    @property
    def ntotal(self) -> int:
        return sum(len(store) for store in self.stores)

    @property
    def nlist(self) -> int:
        """Inverted lists of the combined IVF index (0 for exact shards)."""
        if self.ivf_index is None:
            return 0
        import faiss

        return faiss.extract_index_ivf(self.ivf_index).nlist

    # -- stored vectors --------------------------------------------------------------------------
    def vectors_for_ids(self, ids) -> np.ndarray:
        """The stored vectors of the given ids, float32 (len(ids), dim); an unknown id raises KeyError."""
        wanted = np.asarray([int(i) for i in ids], dtype=np.int64)
        out, found = self.gather(wanted)
        if not found.all():
            raise KeyError(f"no vector for ids {wanted[~found][:10].tolist()}")
        return out

    def iter_vectors(self, batch_size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids int64, vectors float32) in batches, shard by shard (for index-wide passes)."""
        for store in self.stores:
            for start in range(0, len(store), batch_size):
                stop = min(start + batch_size, len(store))
                yield (
                    np.array(store.ids[start:stop], dtype=np.int64),
                    np.array(store.vectors[start:stop], dtype=np.float32),
                )

    def gather(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 vectors for ``wanted`` ids (zeros where unknown, as an empty slot's -1) and the mask of
        those found. The float16 rows are cast as they are assigned, one copy, not two (2.6x faster on
        170 candidates per vector, engine.duplicates' index-wide pass)."""
        out = np.zeros((len(wanted), self.dim), np.float32)
        found = np.zeros(len(wanted), bool)
        for store in self.stores:  # an id lives in one shard only
            mask, rows = store.locate(wanted)
            if rows.size:
                out[mask] = store.vectors[rows]
                found |= mask
        return out, found

    # -- searching: candidates -> refine ---------------------------------------------------------
    def candidates(
        self, queries: np.ndarray, n: int, nprobe: int | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-n (scores, ids) per query over all shards; empty slots: id -1, score -inf.
        ``allowed`` (sorted ids): only those are candidates (faiss skips the others while it scans)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        nq = len(queries)
        selector = id_selector(allowed) if allowed is not None else None
        if self.ivf_index is not None and self.ivf_index.ntotal and nq:
            if selector is not None:
                params = ivf_search_params(self.ivf_index, nprobe, selector)
            elif (params := self._params.get(nprobe)) is None:
                params = self._params[nprobe] = ivf_search_params(self.ivf_index, nprobe)
            scores, ids = self.ivf_index.search(queries, n, params=params)
            return _clean(scores, ids)
        import faiss

        flat_params = faiss.SearchParameters(sel=selector) if selector is not None else None
        parts = [
            index.search(queries, min(n, index.ntotal), params=flat_params)
            for index in (self.flat_indexes or [])
            if index.ntotal and nq
        ]
        if not parts:
            return np.full((nq, n), -np.inf, np.float32), np.full((nq, n), -1, np.int64)
        return merge_results([p[0] for p in parts], [p[1] for p in parts], n)

    def exact_among(self, queries: np.ndarray, allowed: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-n (scores, ids) among the ``allowed`` ids only, from the stored vectors: for a
        selective filter, reading a few thousand vectors beats scanning inverted lists for them, and no
        matching image is missed. Ids without a stored vector are left out."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        best_scores = np.full((len(queries), 0), -np.inf, np.float32)
        best_ids = np.full((len(queries), 0), -1, np.int64)
        for start in range(0, len(allowed), _EXACT_BLOCK):
            block = allowed[start : start + _EXACT_BLOCK]
            wanted = np.broadcast_to(block, (len(queries), len(block)))
            # the refine itself: float16 rows scored where they lie (compiled, or faiss' scan), never a float32 copy
            scores, ids = self.refine(queries, wanted, keep=n)
            best_scores, best_ids = merge_results([best_scores, scores], [best_ids, ids], n)
        if best_scores.shape[1] < n:  # fewer allowed than wanted: pad as faiss does
            pad = n - best_scores.shape[1]
            best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            best_ids = np.pad(best_ids, ((0, 0), (0, pad)), constant_values=-1)
        return best_scores, best_ids

    def refine(self, queries: np.ndarray, ids: np.ndarray, keep: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for candidate ids from the stored vectors: the best ``keep`` (default: all) of
        each row, best first; slots past a row's known candidates hold id -1 and score -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        keep = ids.shape[1] if keep is None else max(0, min(int(keep), ids.shape[1]))
        dtype = self._store_dtype
        if dtype is None:
            scores, out_ids = self._refine_numpy(queries, ids)
            return scores[:, :keep], out_ids[:, :keep]
        if scoring.COMPILED_REFINE is not None:
            # one compiled pass per query: locate, gather, score, keep the best (no Python per query)
            scores = np.empty((len(ids), keep), np.float32)
            out_ids = np.empty((len(ids), keep), np.int64)
            scoring.compiled_refine(queries, ids, self._store_arrays, keep, scores, out_ids)
            return scores, out_ids
        scores = np.full((len(ids), keep), -np.inf, np.float32)
        out_ids = np.full((len(ids), keep), -1, np.int64)
        if keep and ids.size:
            scorer = scorer_for(self.dim, dtype, ids.shape[1])
            block = max(1, REFINE_ROWS // ids.shape[1])  # bounds the gathered rows of a batch to tens of MB
            for start in range(0, len(ids), block):
                part = slice(start, start + block)
                self._refine_scored(scorer, queries[part], ids[part], scores[part], out_ids[part])
        return scores, out_ids

    def _refine_scored(
        self, scorer: Scorer, queries: np.ndarray, ids: np.ndarray, scores: np.ndarray, out_ids: np.ndarray
    ) -> None:
        """Gather each query's candidate rows (still float16) into faiss' code buffer and let its SIMD
        scan score them and keep the best: numpy's float16 -> float32 cast alone cost 2x faiss' whole
        in-RAM refine, and the store is never held in RAM. Where each candidate lives is found for the
        whole batch at once; a query then costs a gather per shard and one faiss call. The few numpy
        calls left matter: after the coarse quantizer's scan has flushed the CPU caches, each costs
        several microseconds."""
        nq, n = ids.shape
        keep = scores.shape[1]
        owner, rows = self._owners(ids)
        if len(self.stores) == 1 and owner.min() == 0:
            # the one shard holds every candidate (an index under 262,144 images): no grouping per query
            vectors, target = self.stores[0].vectors, scorer.rows[:n]
            for q in range(nq):
                np.take(vectors, rows[q], axis=0, out=target)
                scorer.search_into(queries[q], n, keep, scores[q], out_ids[q])
                _to_ids(ids[q], scores[q], out_ids[q])
            return
        for q in range(nq):
            # the query's candidates grouped by shard (-1: an empty slot or an id no shard holds, left out)
            order = np.argsort(owner[q], kind="stable")
            counts = np.bincount(owner[q] + 1, minlength=len(self.stores) + 1)
            filled, skipped = 0, int(counts[0])
            for shard in np.flatnonzero(counts[1:]):
                count = int(counts[shard + 1])
                group = order[skipped + filled : skipped + filled + count]
                np.take(self.stores[shard].vectors, rows[q, group], axis=0, out=scorer.rows[filled : filled + count])
                filled += count
            if filled:
                got = min(keep, filled)
                scorer.search_into(queries[q], filled, got, scores[q], out_ids[q])
                _to_ids(ids[q, order[skipped:]], scores[q, :got], out_ids[q, :got])

    def _owners(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the shard holding each id, -1 for none; its row there), both shaped like ``ids``."""
        ranges = self._id_ranges
        if ranges is not None:  # shards of consecutive ids in order (no removals): one search for all
            firsts, lasts = ranges
            owner = np.searchsorted(firsts, ids, side="right") - 1
            shard = np.maximum(owner, 0)
            rows = ids - firsts[shard]
            outside = (owner < 0) | (ids > lasts[shard])
            if outside.any():
                owner[outside], rows[outside] = -1, 0
            return owner, rows
        owner = np.full(ids.size, -1, np.int64)
        rows = np.zeros(ids.size, np.int64)
        flat = ids.ravel()
        for number, store in enumerate(self.stores):  # an id lives in one shard only
            found, where = store.positions(flat)
            owner[found], rows[found] = number, where[found]
        return owner.reshape(ids.shape), rows.reshape(ids.shape)

    @cached_property
    def _store_dtype(self) -> np.dtype | None:
        """The stores' one vector dtype where faiss' kernels (and the compiled refine) score it, else None
        (mixed dtypes: shards written at different times; the numpy refine takes those)."""
        dtypes = {store.vectors.dtype for store in self.stores} or {np.dtype(np.float32)}
        dtype = next(iter(dtypes))
        return dtype if len(dtypes) == 1 and dtype in SCORER_DTYPES else None

    @cached_property
    def _store_arrays(self) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
        """(ids, vectors) of every store, as the compiled refine takes them."""
        return tuple((store.ids, store.vectors) for store in self.stores)

    @cached_property
    def _id_ranges(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(first ids, last ids) of the shards when each holds consecutive ids and they follow one
        another without overlap (an index without removals), else None."""
        stores = self.stores
        if not stores or not all(len(s) and s.consecutive for s in stores):
            return None
        firsts = np.array([s.first for s in stores], np.int64)
        lasts = np.array([s.last for s in stores], np.int64)
        if (firsts[1:] <= lasts[:-1]).any():
            return None
        return firsts, lasts

    def _refine_numpy(self, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plain numpy refine, for stores faiss has no flat code type for."""
        block = max(1, REFINE_ROWS // max(1, ids.shape[1]))
        parts = [self._refine_block(queries[s : s + block], ids[s : s + block]) for s in range(0, len(queries), block)]
        if not parts:
            return np.zeros(ids.shape, np.float32), ids.astype(np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _refine_block(self, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = ids.astype(np.int64, copy=False)
        vectors, found = self.gather(ids.ravel())  # an empty slot (-1) is simply not found
        # one small matrix product per query: (candidates, dim) @ (dim,)
        exact = np.matmul(vectors.reshape(*ids.shape, self.dim), queries[:, :, None])[..., 0]
        exact[~found.reshape(ids.shape)] = -np.inf
        order = np.argsort(-exact, axis=1, kind="stable")
        scores = np.take_along_axis(exact, order, axis=1)
        out_ids = np.take_along_axis(ids, order, axis=1)
        out_ids[np.isneginf(scores)] = -1
        return scores, out_ids

    def search(
        self, queries: np.ndarray, k: int, nprobe: int | None = None, refine_factor: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids): k * refine_factor candidates, re-scored exactly when refine_factor > 1."""
        if refine_factor <= 1:
            return self.candidates(queries, k, nprobe)
        return self.refine(queries, self.candidates(queries, k * refine_factor, nprobe)[1], keep=k)


def open_store(index_dir: Path, manifest: Manifest, shard: ShardInfo) -> RefineStore:
    """A shard's refine files, checked against the manifest (ids sorted int64, vectors (count, dim))."""
    name = str(shard.ids)
    try:
        ids = _load_npy(index_dir / name)
        if ids.ndim != 1 or ids.dtype != np.int64 or len(ids) != shard.count:
            raise ValueError(f"holds {ids.dtype} {ids.shape}, the manifest says int64 ({shard.count},)")
        name = str(shard.vectors)
        vectors = _load_npy(index_dir / name)
        wanted = (shard.count, manifest.dim)
        if vectors.shape != wanted or vectors.dtype != np.dtype(manifest.refine_dtype):
            raise ValueError(
                f"holds {vectors.dtype} {vectors.shape}, the manifest says {manifest.refine_dtype} {wanted}"
            )
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, TypeError) as exc:
        raise damaged(index_dir, name, f"cannot be read ({_reason(exc)})") from None
    return RefineStore(ids.view(np.ndarray), vectors.view(np.ndarray))


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":  # else numpy tries it as a pickle, and suggests loading it unsafely
            raise ValueError("not a .npy file")
    return np.load(path, mmap_mode="r")


def read_shard_index(index_dir: Path, manifest: Manifest, shard: ShardInfo, mmap: bool = False):
    """A shard's faiss index, checked against the manifest (dim, vector count); IVF lists memory-mapped
    with ``mmap``. Garbage, a truncated file or another index's file raises IndexDamaged."""
    import faiss

    path = index_dir / shard.file
    try:
        index = read_ivf_shard(path) if mmap else faiss.read_index(str(path))
    except RuntimeError as exc:
        if not path.exists():
            raise FileNotFoundError(path) from None
        raise damaged(index_dir, shard.file, f"cannot be read as a faiss index ({_reason(exc)})") from None
    except MemoryError:  # garbage whose sizes read as huge
        raise damaged(index_dir, shard.file, "cannot be read as a faiss index (sizes past any memory)") from None
    if index.d != manifest.dim or index.ntotal != shard.count:
        raise damaged(
            index_dir,
            shard.file,
            f"holds {index.ntotal} vectors of dim {index.d}; the manifest says {shard.count} of dim {manifest.dim}",
        )
    if (manifest.factory != "Flat") != is_ivf(index):
        raise damaged(index_dir, shard.file, f"is not a shard of a {manifest.factory} index")
    return index


_FAISS_LOCATION = re.compile(r"^Error in .*? at \S+:\d+: (?:Error: )?")


def _reason(exc: BaseException) -> str:
    """An error's message without faiss' C++ source location."""
    return _FAISS_LOCATION.sub("", str(exc).strip()) or type(exc).__name__


def _to_ids(candidates: np.ndarray, scores: np.ndarray, positions: np.ndarray) -> None:
    """Turn the scorer's positions among ``candidates`` into their ids, in place; a slot faiss left
    empty (a NaN query scores nothing) becomes id -1, score -inf."""
    if positions.size and positions.min() < 0:
        empty = positions < 0
        positions[empty], scores[empty] = 0, -np.inf
        positions[:] = np.where(empty, -1, candidates[positions])
        return
    np.take(candidates, positions, out=positions)


def _clean(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """faiss' fresh result arrays, empty slots (id -1) scored -inf."""
    empty = ids < 0
    if empty.any():
        scores[empty] = -np.inf
    return scores, ids
