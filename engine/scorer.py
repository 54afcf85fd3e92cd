"""How the refine scores candidate rows exactly, without a float16 -> float32 pass in numpy.

Where the install built it (a C compiler) and the CPU has AVX2/F16C, one call into the compiled kernel
(engine/_refine.c) locates, scores and keeps the best of every query's candidates, a large batch split
over faiss' thread count (``compiled_refine``). Elsewhere each query's candidate rows are copied (still
float16) from the memory-mapped refine store into the code buffer of a small flat faiss index, which
scores and sorts them (``Scorer``). Both give the same results; engine/shards.py chooses.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:  # the refine's compiled kernel (engine/_refine.c), built by the install where a C compiler is at hand
    from . import _refine as _compiled
except ImportError:  # pragma: no cover - an install without a compiler
    _compiled = None  # type: ignore[assignment]

# the compiled refine, where it was built and the CPU has its SIMD kernel (else numpy + faiss, same results)
COMPILED_REFINE = _compiled if _compiled is not None and _compiled.FAST else None

# a batch of at least this many queries is refined on faiss' thread count (the kernel releases the GIL):
# the index-wide passes (tuning, duplicates) and batch searches; a single query stays on its own thread
PARALLEL_REFINE_QUERIES = 64

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


_POOLS_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}  # by thread count, made on the first large batch


def compiled_refine(queries, ids, stores, keep: int, scores: np.ndarray, out_ids: np.ndarray) -> None:
    """``COMPILED_REFINE.refine``, a large batch split over faiss' thread count (slices of C-contiguous
    rows stay contiguous, and each thread writes its own rows of the results)."""
    import faiss

    kernel = COMPILED_REFINE
    if kernel is None:
        raise RuntimeError("the compiled refine is not built here: use the Scorer")
    threads = max(1, faiss.omp_get_max_threads())
    if threads == 1 or len(queries) < PARALLEL_REFINE_QUERIES:
        kernel.refine(queries, ids, stores, keep, scores, out_ids)
        return
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="babelsearch-refine")
    bounds = np.linspace(0, len(queries), threads + 1).astype(int)
    parts = [
        pool.submit(kernel.refine, queries[a:b], ids[a:b], stores, keep, scores[a:b], out_ids[a:b])
        for a, b in zip(bounds[:-1], bounds[1:])
        if b > a
    ]
    for part in parts:
        part.result()
