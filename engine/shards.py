"""Open an index's shards and search them together with per-call parameters."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .layout import Manifest


@dataclass
class ShardSet:
    """The FAISS shards of one index, loaded for searching (never mutated by a search)."""

    indexes: list  # list[faiss.Index]

    @classmethod
    def open(cls, index_dir: str | os.PathLike, manifest: Manifest) -> "ShardSet":
        import faiss

        indexes = []
        for shard in manifest.shards:
            path = Path(index_dir) / shard.file
            indexes.append(faiss.read_index(str(path)))
        return cls(indexes)

    @property
    def ntotal(self) -> int:
        return sum(index.ntotal for index in self.indexes)

    def vectors_for_ids(self, ids) -> np.ndarray:
        """The stored vectors of the given ids, float32 (len(ids), dim); an unknown id raises KeyError."""
        wanted = [int(i) for i in ids]
        dim = self.indexes[0].d if self.indexes else 0
        out = np.zeros((len(wanted), dim), dtype=np.float32)
        found = np.zeros(len(wanted), dtype=bool)
        for index in self.indexes:
            for row, image_id in enumerate(wanted):
                if found[row]:
                    continue
                try:
                    out[row] = index.reconstruct(image_id)
                    found[row] = True
                except RuntimeError:
                    pass  # not in this shard
        if not found.all():
            raise KeyError(f"no vector for ids {[i for i, f in zip(wanted, found) if not f][:10]}")
        return out

    def iter_vectors(self, batch_size: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids int64, vectors float32) in batches, shard by shard (for index-wide passes)."""
        import faiss

        for index in self.indexes:
            ids = faiss.vector_to_array(index.id_map).astype(np.int64)
            for start in range(0, index.ntotal, batch_size):
                n = min(batch_size, index.ntotal - start)
                yield ids[start : start + n], index.index.reconstruct_n(start, n)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query over all shards; missing slots have id -1, score -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(queries)
        if not self.indexes or n == 0:
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        scores, ids = [], []
        for index in self.indexes:
            if index.ntotal == 0:
                continue
            d, i = index.search(queries, min(k, index.ntotal))
            scores.append(d)
            ids.append(i)
        if not scores:
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        return merge_results(scores, ids, k)


def merge_results(
    scores: list[np.ndarray], ids: list[np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
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
