"""Open an index's shards and search them together with per-call parameters.

Every shard of an IVF index was filled from the same trained index, so their inverted lists are
combined at open time into one searchable index (the recipe of faiss' ``contrib/ondisk.py``): one
coarse quantisation and one list scan per query, exactly the results an unsharded index gives.
Flat shards are searched one by one and their top-k lists merged.

Each shard keeps its vectors beside it (``*.vectors.npy``, memory-mapped, rows sorted by id in
``*.ids.npy``): they re-score candidates exactly (refine) and serve ``vectors_for_ids`` and
``iter_vectors`` without holding float vectors in RAM.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ivf import combine_ivf_shards, id_selector, is_ivf, ivf_search_params, merge_results, read_ivf_shard
from .layout import Manifest, ShardInfo, damaged
from .scorer import SCORER_DTYPES, Scorer, scorer_for

# candidate vectors re-scored at once: bounds the (queries, candidates, dim) block to tens of MB
REFINE_ROWS = 32_768
# allowed ids scored per block by exact_among (the refine's scorer holds one block's rows)
_EXACT_BLOCK = 8192


@dataclass
class RefineStore:
    """One shard's ids (sorted int64) and vectors (float16/float32 rows), memory-mapped."""

    ids: np.ndarray
    vectors: np.ndarray

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
        if not len(self.ids) or not len(wanted):
            return np.zeros(len(wanted), bool), np.zeros(0, np.int64)
        first, last = int(self.ids[0]), int(self.ids[-1])
        if last - first + 1 == len(self.ids):  # consecutive ids (no removals): the row is the offset
            found = (wanted >= first) & (wanted <= last)
            return found, wanted[found] - first
        # sorted keys: numpy then narrows each binary search from the last one (5x fewer cache misses)
        order = np.argsort(wanted, kind="stable")
        rows = np.empty(len(wanted), np.int64)
        rows[order] = np.searchsorted(self.ids, wanted[order])
        rows = np.minimum(rows, len(self.ids) - 1)
        found = np.asarray(self.ids[rows]) == wanted
        return found, rows[found]

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
        out, found = self._gather(wanted)
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

    def _gather(self, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 vectors for ``wanted`` (zeros where unknown) and the mask of those found."""
        out = np.zeros((len(wanted), self.dim), np.float32)
        found = np.zeros(len(wanted), bool)
        for store in self.stores:  # an id lives in one shard only
            mask, rows = store.locate(wanted)
            if rows.size:
                out[mask] = store.rows(rows)
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
            params = ivf_search_params(self.ivf_index, nprobe, selector)
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
            # the refine's own scorer: float16 rows straight into faiss' SIMD scan, never a float32 copy
            scores, ids = self.refine(queries, wanted)
            best_scores, best_ids = merge_results([best_scores, scores[:, :n]], [best_ids, ids[:, :n]], n)
        if best_scores.shape[1] < n:  # fewer allowed than wanted: pad as faiss does
            pad = n - best_scores.shape[1]
            best_scores = np.pad(best_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            best_ids = np.pad(best_ids, ((0, 0), (0, pad)), constant_values=-1)
        return best_scores, best_ids

    def refine(self, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for candidate ids from the stored vectors, each row sorted best first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        dtypes = {store.vectors.dtype for store in self.stores}
        if len(dtypes) != 1 or next(iter(dtypes)) not in SCORER_DTYPES:
            return self._refine_numpy(queries, ids)
        block = max(1, REFINE_ROWS // max(1, ids.shape[1]))
        scores = np.full(ids.shape, -np.inf, np.float32)
        out_ids = np.full(ids.shape, -1, np.int64)
        scorer = scorer_for(self.dim, next(iter(dtypes)), ids.shape[1])
        for start in range(0, len(queries), block):
            stop = min(start + block, len(queries))
            self._refine_scored(scorer, queries[start:stop], ids[start:stop], scores[start:stop], out_ids[start:stop])
        return scores, out_ids

    def _refine_scored(
        self, scorer: Scorer, queries: np.ndarray, ids: np.ndarray, scores: np.ndarray, out_ids: np.ndarray
    ) -> None:
        """Gather each query's candidate rows (still float16) straight into faiss' code buffer and let
        its SIMD scan score and sort them: numpy's float16 -> float32 cast alone cost 2x faiss' whole
        in-RAM refine; this path stays within a few percent of it and never holds the store in RAM."""
        nq, n = ids.shape
        flat = ids.ravel()
        held = []  # per shard holding any candidate: (shard, mask (nq, n), rows (nq, n), count per query)
        for store in self.stores:  # an id lives in one shard only
            mask, rows = store.locate(flat)
            if rows.size:
                flat_rows = np.zeros(flat.shape, np.int64)
                flat_rows[mask] = rows
                held.append((store, mask.reshape(nq, n), flat_rows.reshape(nq, n), mask.reshape(nq, n).sum(axis=1)))
        for q in range(nq):
            filled, positions = 0, []
            for store, in_store, row_of, counts in held:
                count = int(counts[q])
                if count:
                    where = np.flatnonzero(in_store[q])
                    np.take(store.vectors, row_of[q, where], axis=0, out=scorer.rows[filled : filled + count])
                    positions.append(where)
                    filled += count
            if filled:
                found_scores, order = scorer.search(queries[q], filled)
                scores[q, :filled] = found_scores
                out_ids[q, :filled] = ids[q, np.concatenate(positions)[order]]

    def _refine_numpy(self, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plain numpy refine, for stores faiss has no flat code type for."""
        block = max(1, REFINE_ROWS // max(1, ids.shape[1]))
        parts = [self._refine_block(queries[s : s + block], ids[s : s + block]) for s in range(0, len(queries), block)]
        if not parts:
            return np.zeros(ids.shape, np.float32), ids.astype(np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _refine_block(self, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = ids.astype(np.int64, copy=False)
        vectors, found = self._gather(ids.ravel())  # an empty slot (-1) is simply not found
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
        scores, ids = self.refine(queries, self.candidates(queries, k * refine_factor, nprobe)[1])
        return scores[:, :k], ids[:, :k]


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


def _clean(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = scores.astype(np.float32, copy=True)
    ids = ids.astype(np.int64, copy=False)
    scores[ids < 0] = -np.inf
    return scores, ids
