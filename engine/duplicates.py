"""Near-duplicate images: what makes two of them near-duplicates, and folding them in a result list
(``collapse_hits``); listing them index-wide is engine.duplicate_scan's (``duplicate_groups``).

"Near-duplicate" means (``near_duplicates``): where both images have a pixel signature (a 16 x 16 grey
thumbnail recorded at indexing, ``indexer.decode.pixel_signature``), stored vectors with cosine >=
``VECTOR_FLOOR`` (0.4) and signatures with correlation >= ``PIXEL_THRESHOLD`` (0.8); where either has none
(rows indexed before signatures were recorded, an index of precomputed vectors) or both are flat (one
colour: the pixels tell nothing), cosine >= ``DUPLICATE_THRESHOLD`` (0.985) alone, as before. The ``threshold`` argument
of collapse_hits and duplicate_groups (``babelsearch duplicates --threshold``) is that cosine-only one;
``pixel_threshold`` is the correlation.

Why both: babel-lite's image vectors describe the ImageNet classes a photo shows, not its pixels, so two
different photos of the same kind of thing (an Egyptian cat and a tabby, cosine 0.991) score as high as
two copies of one photo, while a half-size copy can move the classifier to a cosine of 0.28. The
signature tells copies from look-alikes; the loose cosine keeps two photos the model sees as different
things apart even where their grey layouts agree.

All three numbers were measured (``scripts/duplicate_threshold.py``, README "Near-duplicates"): 100 photos
of the shared ImageNet sample, each copied five ways (resized to 50%, re-encoded as JPEG quality 60, 5%
cropped off every edge, 8% brighter, and all four at once), indexed with babel-lite together with all
1000 originals, and every pair of the 1500 images scored. Cosine alone at 0.985: precision 0.986, recall
0.472, 0.8% of the distinct photos have a look-alike that could fold them away; the signatures at 0.4 and
0.8: precision 1.000, recall 0.901, none. Another model's vectors may want other numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidQuery

if TYPE_CHECKING:
    from .hits import Hit

__all__ = [
    "DUPLICATE_THRESHOLD",
    "PIXEL_THRESHOLD",
    "SIGNATURE_BYTES",
    "VECTOR_FLOOR",
    "check_threshold",
    "collapse_hits",
    "near_duplicates",
    "signature_matrix",
]

DUPLICATE_THRESHOLD = 0.985  # cosine, for pairs without both pixel signatures; measured, see the module doc
PIXEL_THRESHOLD = 0.8  # correlation of two pixel signatures; measured, see the module doc
VECTOR_FLOOR = 0.4  # cosine a pair with signatures needs as well; measured, see the module doc
SIGNATURE_BYTES = 256  # indexer.decode.pixel_signature: 16 x 16 int8

# signature_matrix's states of an image
_MISSING, _FLAT, _TEXTURED = 0, 1, 2


def check_threshold(threshold: float, name: str = "threshold", kind: str = "cosine") -> float:
    """``threshold`` as a float in (0, 1]; anything else raises InvalidQuery (naming ``name``)."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise InvalidQuery(f"{name} must be a number in (0, 1], got {threshold!r}") from None
    if isinstance(threshold, bool) or not 0.0 < value <= 1.0:
        raise InvalidQuery(f"{name} must be a {kind} in (0, 1], got {threshold!r}")
    return value


def signature_matrix(signatures: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel signatures (``indexer.decode.pixel_signature`` bytes, or None) as float32 unit rows, mean
    removed, so a dot product is their correlation; and each image's state: 0 no signature (None, or not
    SIGNATURE_BYTES long), 1 flat (all zero: no contrast to compare), 2 a signature."""
    matrix = np.zeros((len(signatures), SIGNATURE_BYTES), np.float32)
    state = np.zeros(len(signatures), np.int8)
    for row, blob in enumerate(signatures):
        if blob is not None and len(blob) == SIGNATURE_BYTES:
            matrix[row] = np.frombuffer(blob, dtype=np.int8)
            state[row] = _FLAT
    matrix -= matrix.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(matrix, axis=1)
    textured = norms > 0
    matrix[textured] /= norms[textured, None]
    state[textured] = _TEXTURED
    return matrix, state


def near_duplicates(
    cosines: np.ndarray,
    correlations: np.ndarray,
    state_a: np.ndarray,
    state_b: np.ndarray,
    threshold: float = DUPLICATE_THRESHOLD,
    pixel_threshold: float = PIXEL_THRESHOLD,
    vector_floor: float = VECTOR_FLOOR,
) -> np.ndarray:
    """The test, pair by pair (arrays of one shape; states from ``signature_matrix``): where both images
    have a signature, cosine >= ``vector_floor`` and correlation >= ``pixel_threshold``; where either has
    none (rows indexed before signatures, an index of precomputed vectors) or both are flat (blank, one
    colour: the pixels tell nothing), cosine >= ``threshold`` as before; a flat image and one with contrast
    are never near-duplicates (a copy keeps the contrast its original had)."""
    both = (state_a == _TEXTURED) & (state_b == _TEXTURED)
    either_missing = (state_a == _MISSING) | (state_b == _MISSING)
    both_flat = (state_a == _FLAT) & (state_b == _FLAT)
    by_pixels = both & (cosines >= vector_floor) & (correlations >= pixel_threshold)
    return by_pixels | ((either_missing | both_flat) & (cosines >= threshold))


def collapse_hits(
    hits: list[Hit],
    vectors: np.ndarray,
    threshold: float,
    k: int,
    signatures: Sequence[bytes | None] | None = None,
    pixel_threshold: float = PIXEL_THRESHOLD,
    vector_floor: float = VECTOR_FLOOR,
) -> list[Hit]:
    """Fold near-duplicates into the best-ranked hit they duplicate; at most ``k`` hits come back.

    ``vectors``: the hits' stored vectors, row i for hits[i]; ``signatures``: their pixel signatures (None,
    or None for a hit: compared by cosine >= ``threshold`` alone). Greedy in rank order: a hit that is a
    near-duplicate (``near_duplicates``) of an already kept hit is not kept; its id (and the ids already
    folded into it) goes into the ``similar`` list of the kept hit, among those it duplicates, whose vector
    is closest. Hits after the k-th kept one still fold into the kept ones (so "+N similar" counts them),
    the others are dropped. The given hits are left as they are: the kept ones come back as copies, each
    with its own ``similar`` list.
    """
    threshold = check_threshold(threshold)
    pixel_threshold = check_threshold(pixel_threshold, "pixel_threshold", "correlation")
    vector_floor = check_threshold(vector_floor, "vector_floor")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidQuery(f"k must be a whole number >= 1, got {k!r}")
    if not hits:
        return []
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or len(matrix) != len(hits):
        raise ValueError(f"collapse_hits needs one vector per hit: {len(hits)} hits, vectors of shape {matrix.shape}")
    if signatures is not None and len(signatures) != len(hits):
        raise ValueError(f"collapse_hits needs one signature (or None) per hit: {len(hits)} hits, {len(signatures)}")
    pixels, state = signature_matrix(signatures if signatures is not None else [None] * len(hits))
    # stored vectors are unit length; normalising again costs nothing and makes the dot product a cosine
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.where(norms > 0, norms, np.float32(1.0))
    kept: list[Hit] = []
    kept_rows: list[int] = []
    folded: list[list[int]] = []  # per kept hit, the ids folded into it (its own "similar" list first)
    for row, hit in enumerate(hits):
        if kept_rows:
            cosines = matrix[kept_rows] @ matrix[row]
            duplicate = near_duplicates(
                cosines,
                pixels[kept_rows] @ pixels[row],
                state[kept_rows],
                np.full(len(kept_rows), state[row]),
                threshold,
                pixel_threshold,
                vector_floor,
            )
            if duplicate.any():
                best = int(np.argmax(np.where(duplicate, cosines, -np.inf)))  # the first of equals: better ranked
                folded[best].extend([hit.id, *_similar(hit)])
                continue
        if len(kept) < k:
            kept.append(hit)
            kept_rows.append(row)
            folded.append(list(_similar(hit)))
    # copies with lists of their own: the given hits (and any list they hold) are left as they were
    return [dataclasses.replace(hit, similar=similar) for hit, similar in zip(kept, folded)]


def _similar(hit: Hit) -> list[int]:
    return list(hit.similar or [])
