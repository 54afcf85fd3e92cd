"""The index-wide scan for near-duplicates (``babelsearch duplicates``, the web page of them): groups
of images that ``engine.duplicates.near_duplicates`` takes for copies of each other, found through each
stored vector's nearest neighbours, through the engine's public ``shards`` and ``catalog``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .catalog import rows_by_ids, signatures_by_ids
from .duplicates import (
    DUPLICATE_THRESHOLD,
    PIXEL_THRESHOLD,
    VECTOR_FLOOR,
    check_threshold,
    near_duplicates,
    signature_matrix,
)
from .errors import InvalidQuery

if TYPE_CHECKING:
    from .search import SearchEngine

__all__ = ["DUPLICATE_NEIGHBOURS", "IVF_CANDIDATE_FACTOR", "duplicate_groups", "group_rows"]

# nearest neighbours looked at per stored vector: a burst of more near-copies than this still ends up in
# one group, because each copy's neighbours link it to the others (union-find joins the links)
DUPLICATE_NEIGHBOURS = 16

# IVF candidates per wanted neighbour, re-scored exactly. Measured on 12,000 babel-lite vectors (the
# duplicate_threshold.py index plus noisy copies) as IVF64,PQ48: factors 1, 2, 4 and 10 (the index's
# refine_factor) put every pair at cosine >= 0.95 or >= 0.985 in one group alike, at about 1.3, 1.9 and
# 3.6x the time of 1. 4 keeps a margin for denser collections, where PQ codes order near-duplicates
# poorly (indexer/factory.py); the exact scores, not the codes, decide which pairs count
IVF_CANDIDATE_FACTOR = 4

_ROWS = 32_768  # candidate vectors scored at once: (batch, candidates, dim) float32 stays near 50 MB


def duplicate_groups(
    engine: SearchEngine,
    threshold: float = DUPLICATE_THRESHOLD,
    neighbours: int = DUPLICATE_NEIGHBOURS,
    pixel_threshold: float = PIXEL_THRESHOLD,
) -> list[list[int]]:
    """Groups of near-duplicate images of ``engine``'s index: lists of catalog ids, largest group first
    (then by lowest id), each group's ids ascending; images without a near-duplicate are left out.

    Not all pairs: each stored vector's ``neighbours`` nearest through the index's own search (IVF: the
    index's nprobe, IVF_CANDIDATE_FACTOR times as many candidates, re-scored exactly from the stored
    vectors), and the pairs that pass ``near_duplicates`` (pixel signatures at correlation >=
    ``pixel_threshold`` where both have one, else cosine >= ``threshold``) joined by union-find. So a chain
    A~B~C is one group even where A and C are further apart (a burst drifting frame by frame). Vectors
    without a catalog row (an interrupted write) are left out."""
    threshold = check_threshold(threshold)
    pixel_threshold = check_threshold(pixel_threshold, "pixel_threshold", "correlation")
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or neighbours < 1:
        raise InvalidQuery(f"neighbours must be a whole number >= 1, got {neighbours!r}")
    loose = min(threshold, VECTOR_FLOOR)  # the candidates: pairs either test could take
    shards = engine.shards
    n_candidates = neighbours + 1  # the vector itself comes first
    if shards.nlist:  # IVF-PQ: the codes rank the candidates roughly, so take more and score them exactly
        n_candidates *= IVF_CANDIDATE_FACTOR
    nprobe = engine.default_nprobe
    n_candidates = min(n_candidates, max(shards.ntotal, 1))
    left: list[np.ndarray] = []
    right: list[np.ndarray] = []
    pair_cosines: list[np.ndarray] = []
    for ids, vectors in shards.iter_vectors(batch_size=max(64, _ROWS // n_candidates)):
        _, candidates = shards.candidates(vectors, n_candidates, nprobe=nprobe)
        # exact cosines from the stored vectors (the numbers collapse_hits compares), in one product per
        # batch (ShardSet.refine scores and sorts each query's candidates in a faiss call of its own)
        stored, found = shards.gather(candidates.ravel())
        scores = np.matmul(stored.reshape(*candidates.shape, -1), vectors[:, :, None])[..., 0]
        close = (scores >= loose) & found.reshape(candidates.shape) & (candidates != ids[:, None])
        rows, columns = np.nonzero(close)
        left.append(ids[rows])
        right.append(candidates[rows, columns])
        pair_cosines.append(scores[rows, columns])
    if not left:
        return []
    a, b = np.concatenate(left), np.concatenate(right)
    if not len(a):
        return []
    pairs, first = np.unique(np.sort(np.stack([a, b], axis=1), axis=1), axis=0, return_index=True)
    pairs = pairs[_pairs_that_pass(engine, pairs, np.concatenate(pair_cosines)[first], threshold, pixel_threshold)]
    if not len(pairs):
        return []
    known = rows_by_ids(engine.catalog, np.unique(pairs).tolist()).keys()
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for x, y in pairs.tolist():
        if x in known and y in known:
            rx, ry = root(x), root(y)
            if rx != ry:
                parent[max(rx, ry)] = min(rx, ry)
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    return sorted((sorted(group) for group in groups.values()), key=lambda group: (-len(group), group[0]))


def _pairs_that_pass(
    engine: SearchEngine, pairs: np.ndarray, cosines: np.ndarray, threshold: float, pixel_threshold: float
) -> np.ndarray:
    """The mask of ``pairs`` (n x 2 ids, their ``cosines``) that ``near_duplicates`` takes, the signatures
    read from the catalog in one pass and compared in pieces (memory stays near _ROWS rows)."""
    ids = np.unique(pairs)
    stored = signatures_by_ids(engine.catalog, ids.tolist())
    pixels, state = signature_matrix([stored.get(int(i)) for i in ids.tolist()])
    left, right = np.searchsorted(ids, pairs[:, 0]), np.searchsorted(ids, pairs[:, 1])
    keep = np.zeros(len(pairs), bool)
    for start in range(0, len(pairs), _ROWS):
        x, y = left[start : start + _ROWS], right[start : start + _ROWS]
        correlations = np.einsum("ij,ij->i", pixels[x], pixels[y])
        keep[start : start + _ROWS] = near_duplicates(
            cosines[start : start + _ROWS], correlations, state[x], state[y], threshold, pixel_threshold
        )
    return keep


def group_rows(engine: SearchEngine, groups: list[list[int]]) -> list[list[dict[str, Any]]]:
    """The catalog rows of ``duplicate_groups``' ids, in the same order (for the CLI and the web page);
    an image removed since is left out, and a group left with one image is dropped."""
    rows = rows_by_ids(engine.catalog, [image_id for group in groups for image_id in group])
    found = ([rows[image_id] for image_id in group if image_id in rows] for group in groups)
    return [group for group in found if len(group) > 1]
