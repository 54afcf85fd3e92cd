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

from .layout import Manifest, ShardInfo, damaged

# candidate vectors re-scored at once: bounds the (queries, candidates, dim) block to tens of MB
REFINE_ROWS = 32_768


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
        rows = np.searchsorted(self.ids, wanted)
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
    def candidates(self, queries: np.ndarray, n: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-n (scores, ids) per query over all shards; empty slots: id -1, score -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        nq = len(queries)
        if self.ivf_index is not None and self.ivf_index.ntotal and nq:
            params = ivf_search_params(self.ivf_index, nprobe)
            scores, ids = self.ivf_index.search(queries, n, params=params)
            return _clean(scores, ids)
        parts = [
            index.search(queries, min(n, index.ntotal)) for index in (self.flat_indexes or []) if index.ntotal and nq
        ]
        if not parts:
            return np.full((nq, n), -np.inf, np.float32), np.full((nq, n), -1, np.int64)
        return merge_results([p[0] for p in parts], [p[1] for p in parts], n)

    def refine(self, queries: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores for candidate ids from the stored vectors, each row sorted best first."""
        queries = np.asarray(queries, dtype=np.float32)
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


def is_ivf(index) -> bool:
    import faiss

    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def ivf_search_params(index, nprobe: int | None):
    """Per-call IVF parameters (through a pre-transform such as OPQ); None keeps the index's own."""
    import faiss

    if nprobe is None:
        return None
    ivf = faiss.extract_index_ivf(index)
    params = faiss.SearchParametersIVF(nprobe=max(1, min(int(nprobe), ivf.nlist)))
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        wrapped = faiss.SearchParametersPreTransform()
        wrapped.index_params = params
        wrapped.referenced_objects = [params]  # keep the inner params alive as long as the wrapper
        return wrapped
    return params


def combine_ivf_shards(indexes: list):
    """One index searching the inverted lists of all shards (which share one trained quantizer).

    The shards are best read memory-mapped (``read_ivf_shard``): their entries are copied once into
    lists allocated at their exact final size, so the combined index holds codes + ids + one
    quantizer and nothing else (copying from heap-loaded shards would leave their freed memory to
    the allocator, about as much again).
    """
    import faiss

    base = indexes[0]
    ivfs = [faiss.extract_index_ivf(index) for index in indexes]
    nlist, code_size = ivfs[0].nlist, ivfs[0].code_size
    if any(ivf.nlist != nlist or ivf.code_size != code_size for ivf in ivfs):
        raise ValueError("shards were filled from different trained indexes")
    sizes = np.array([[ivf.invlists.list_size(i) for i in range(nlist)] for ivf in ivfs], dtype=np.int64)
    combined = faiss.ArrayInvertedLists(nlist, code_size)
    offsets = np.zeros(nlist, dtype=np.int64)
    for used in np.flatnonzero(sizes.sum(axis=0)):
        combined.resize(int(used), int(sizes[:, used].sum()))
    for ivf, shard_sizes in zip(ivfs, sizes):
        lists = ivf.invlists
        for filled in np.flatnonzero(shard_sizes):
            list_no, n = int(filled), int(shard_sizes[filled])
            ids, codes = lists.get_ids(list_no), lists.get_codes(list_no)
            combined.update_entries(list_no, int(offsets[list_no]), n, ids, codes)
            lists.release_codes(list_no, codes)
            lists.release_ids(list_no, ids)
            offsets[list_no] += n
    base_ivf = ivfs[0]
    base_ivf.replace_invlists(combined, True)
    combined.this.disown()  # owned by the index now
    base_ivf.ntotal = int(sizes.sum())
    base.ntotal = base_ivf.ntotal
    return base


def read_ivf_shard(path: Path):
    """A shard file with its inverted lists memory-mapped (read-only), else read into memory."""
    import faiss

    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except (RuntimeError, AttributeError):
        return faiss.read_index(str(path))


def merge_results(scores: list[np.ndarray], ids: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (higher score is better) into one top-k list per query."""
    all_scores = np.concatenate(scores, axis=1).astype(np.float32, copy=True)
    all_ids = np.concatenate(ids, axis=1).astype(np.int64, copy=False)
    all_scores[all_ids < 0] = -np.inf
    if all_scores.shape[1] < k:
        pad = k - all_scores.shape[1]
        all_scores = np.pad(all_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        all_ids = np.pad(all_ids, ((0, 0), (0, pad)), constant_values=-1)
    order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(all_scores, order, axis=1)
    top_ids = np.take_along_axis(all_ids, order, axis=1)
    top_ids[~np.isfinite(top_scores)] = -1
    return top_scores, top_ids
