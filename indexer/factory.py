"""Which faiss index an index directory uses, how it is trained, and on which device.

The rules, in one place:

- ``Flat`` (exact) while a collection is too small to train IVF-PQ well: faiss' k-means wants at
  least 39 training points per centroid, for the coarse quantizer's ``nlist`` centroids and for each
  PQ codebook's 256 centroids. Below ``39 * max(nlist, 256)`` vectors (about 20,000) an exact scan
  is also fast enough.
- Above it ``IVF{nlist},PQ{M}``: ``nlist`` is 4 * sqrt(N) rounded to a power of two; ``M`` gives
  codes of at most 32 bytes (the largest divisor of dim up to 32 with at most 16 dims per
  sub-quantizer; SQ8 when dim has none), so an index costs about 46 bytes of RAM per vector at
  1M x 384 (32 code + 8 id + the quantizer); exact re-scoring from memory-mapped float16 vectors
  restores the precision PQ gives away.
- The code size is measured, not guessed, when the factory is the automatic one: at training time
  ``tuning.choose_code_size`` tries ``M`` up the ``CODE_BYTES_LADDER`` (32, 48, 64, 96 bytes) and
  keeps the smallest whose exactly re-scored candidate pool reaches the recall target (hard data,
  e.g. a class of near-duplicate photos, needs 64 bytes or more: 32-byte codes cannot order them).
- An index is retrained when the collection reaches ``OUTGROWN_FACTOR`` times the size it was
  trained for: by then the ideal nlist has doubled (sqrt(4) = 2), one power of two up.
"""

from __future__ import annotations

import math
import re

from babelsearch.engine.errors import InvalidSetting
from babelsearch.engine.ivf import is_ivf

FLAT = "Flat"
MIN_POINTS_PER_CENTROID = 39  # faiss' k-means warns below this many training points per centroid
GPU_POINTS_PER_CENTROID = 256  # faiss' default sample cap; a GPU trains on that many at no cost
PQ_CENTROIDS = 256  # 8-bit codebooks
MAX_CODE_BYTES = 32
# code sizes (bytes per vector) the trainer may choose for an automatic factory; 96 bytes is still
# a ninth of the RAM per vector of an in-RAM HNSW graph (about 1,800 bytes at 384 dims)
CODE_BYTES_LADDER = (32, 48, 64, 96)
MAX_DIMS_PER_SUBQUANTIZER = 16
OUTGROWN_FACTOR = 4
DEFAULT_SHARD_SIZE = 262_144
# candidates re-scored exactly per wanted result, for lossy codes: 32-byte PQ codes cannot order
# near-duplicates (a class of similar photos), so the exact refine needs a deep pool; on the 1M
# benchmark recall@10 is 0.64 at 8, 0.95 at 32, 0.99 at 50 (README)
DEFAULT_REFINE_FACTOR = 50
TARGET_PROBE_FRACTION = 1 / 64  # default nprobe = nlist / 64: a margin for text queries, which lie
# farther from the image clusters than the benchmark's held-out points
MIN_DEFAULT_NPROBE = 16


def nlist_for(n: int) -> int:
    """Inverted lists for n vectors: 4 * sqrt(n) rounded to the nearest power of two."""
    return 2 ** max(0, round(math.log2(4 * math.sqrt(max(n, 1)))))


def pq_m_for(dim: int) -> int | None:
    """Sub-quantizers for dim: the largest divisor up to 32 with at most 16 dims each, or None."""
    for m in range(min(MAX_CODE_BYTES, dim), 0, -1):
        if dim % m == 0 and dim // m <= MAX_DIMS_PER_SUBQUANTIZER:
            return m
    return None


def pq_m_ladder(dim: int) -> list[int]:
    """The sub-quantizer counts the trainer may try for dim, smallest first: the default (``pq_m_for``),
    then for each of ``CODE_BYTES_LADDER`` the largest divisor of dim up to it."""
    first = pq_m_for(dim)
    if first is None:
        return []
    ladder = [first]
    for size in CODE_BYTES_LADDER:
        m = max((d for d in range(1, min(size, dim) + 1) if dim % d == 0), default=first)
        if m > ladder[-1]:
            ladder.append(m)
    return ladder


_PLAIN_IVF_PQ = re.compile(r"IVF(\d+),PQ(\d+)")


def pq_code_of(factory: str) -> tuple[int, int] | None:
    """(nlist, M) of a plain ``IVF{nlist},PQ{M}`` factory string, else None."""
    match = _PLAIN_IVF_PQ.fullmatch(factory)
    return (int(match[1]), int(match[2])) if match else None


def with_code(factory: str, m: int) -> str:
    """A plain IVF-PQ factory string with M sub-quantizers instead of its own."""
    code = pq_code_of(factory)
    if code is None:
        raise ValueError(f"{factory!r} is not a plain IVF,PQ factory")
    return f"IVF{code[0]},PQ{m}"


def same_layout(chosen: str, current: str) -> bool:
    """Whether an automatic factory (``choose_factory``, code size not yet measured) is what the index
    already has, up to the code size the trainer measured for it."""
    a, b = pq_code_of(chosen), pq_code_of(current)
    if a is None or b is None:
        return chosen == current
    return a[0] == b[0]


def choose_factory(n: int, dim: int) -> str:
    """The factory string for a collection of n vectors of dimension dim (see the module doc)."""
    nlist = nlist_for(n)
    if n < MIN_POINTS_PER_CENTROID * max(nlist, PQ_CENTROIDS):
        return FLAT
    m = pq_m_for(dim)
    return f"IVF{nlist},PQ{m}" if m else f"IVF{nlist},SQ8"


def make_index(factory: str, dim: int):
    """An empty faiss index for a factory string; only exact Flat and IVF families shard and merge."""
    import faiss

    if factory == FLAT:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise InvalidSetting(f"--index-factory {factory!r} is not a faiss factory string: {message}") from None
    if not is_ivf(index):
        raise InvalidSetting(
            f"--index-factory {factory!r}: only 'Flat' and IVF factories (e.g. 'IVF1024,PQ32', "
            "'OPQ32,IVF4096,PQ32', 'IVF256,Flat') can be sharded"
        )
    return index


def is_lossy(factory: str) -> bool:
    """Whether an index's codes approximate the vectors (then refine vectors may be float16)."""
    return factory != FLAT and not re.fullmatch(r"IVF\d+(_HNSW\d+)?,Flat", factory)


def train_points(index, device: str) -> int:
    """How many vectors to train an empty index on (a sample: more buys little, costs much on CPU)."""
    per_centroid = GPU_POINTS_PER_CENTROID if device == "cuda" else MIN_POINTS_PER_CENTROID
    return per_centroid * _largest_codebook(index)


def min_train_points(index) -> int:
    """The fewest vectors faiss can train an empty index with at all."""
    return _largest_codebook(index)


def _largest_codebook(index) -> int:
    import faiss

    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    pq = getattr(ivf, "pq", None)
    return max(ivf.nlist, pq.ksub if pq is not None else 1)


def default_search_settings(index, factory: str) -> dict[str, int]:
    """Per-call defaults recorded in the manifest: nprobe and refine_factor."""
    if index is None or factory == FLAT:
        return {"refine_factor": 1}
    import faiss

    nlist = faiss.extract_index_ivf(index).nlist
    nprobe = min(nlist, max(MIN_DEFAULT_NPROBE, round(nlist * TARGET_PROBE_FRACTION)))
    return {"nprobe": nprobe, "refine_factor": DEFAULT_REFINE_FACTOR if is_lossy(factory) else 1}
