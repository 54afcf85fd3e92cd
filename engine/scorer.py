"""Exact re-scoring of candidate rows by faiss' own kernels, without a float16 -> float32 pass in numpy.

engine/shards.py's refine where the compiled kernel (engine/_refine.c) is not built: each query's
candidate rows are copied (still float16) from the memory-mapped refine store into the code buffer of a
small flat faiss index, which scores and sorts them.
"""

from __future__ import annotations

import threading

import numpy as np

SCORER_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


class Scorer:
    """A small faiss flat index whose code buffer is refilled with each query's candidate rows.

    float16 rows are exactly the codes of faiss' fp16 scalar quantizer, float32 rows those of
    IndexFlatIP, so a gathered block is scored by faiss' own SIMD kernels without a conversion pass.
    One per thread (``_scorer``): searches on a shared engine run in parallel threads."""

    def __init__(self, dim: int, dtype: np.dtype, capacity: int):
        import faiss

        if dtype == np.float16:
            self.index = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            self.index = faiss.IndexFlatIP(dim)
        nbytes = max(1, capacity) * dim * dtype.itemsize
        self.index.codes.resize(nbytes)
        buffer = faiss.rev_swig_ptr(self.index.codes.data(), nbytes)
        self.rows = buffer.view(dtype).reshape(max(1, capacity), dim)  # a view of faiss' buffer
        self._filled = -1

    def search_into(self, query: np.ndarray, n: int, k: int, scores: np.ndarray, positions: np.ndarray) -> None:
        """Score the first n of ``rows`` for one query (float32, contiguous) and write the best k
        (k <= n) into ``scores`` and ``positions`` (contiguous float32 / int64 rows), best first.
        No copy on either side: one faiss call is the whole cost."""
        import faiss

        if n != self._filled:  # a setattr through faiss' wrappers costs as much as a numpy call
            self.index.ntotal = self._filled = n
        self.index.search_c(1, faiss.swig_ptr(query), k, faiss.swig_ptr(scores), faiss.swig_ptr(positions))


_SCORERS = threading.local()


def scorer_for(dim: int, dtype: np.dtype, capacity: int) -> Scorer:
    """This thread's scorer for (dim, dtype), grown to ``capacity`` rows (building one costs a third of a refine)."""
    cached = getattr(_SCORERS, "scorers", None)
    if cached is None:
        cached = _SCORERS.scorers = {}
    scorer = cached.get((dim, dtype.str))
    if scorer is None or len(scorer.rows) < capacity:
        scorer = cached[(dim, dtype.str)] = Scorer(dim, dtype, capacity)
    return scorer
