"""Rerank search candidates against hubness: margin (ratio, distance), CSLS, or none. Pure numpy.

Artetxe & Schwenk, "Margin-based Parallel Corpus Mining with Multilingual Sentence Embeddings"
(ACL 2019), score a pair (q, y) relative to the neighbourhoods of both sides:

    margin    cos(q, y) / ((r(q) + r(y)) / 2)
    distance  cos(q, y) - (r(q) + r(y)) / 2
    csls      2 cos(q, y) - r(q) - r(y)        (Conneau et al. 2018)
    none      cos(q, y)

r(q) is the mean of the query's k best cosines over its candidate images, r(y) the mean of the image's
k best cosines over a bank of typical queries (``engine.bank``), computed at index time for every k
in MARGIN_KS. A "hub" image, close to every query, has a large r(y) and is pushed down. ``distance``
and ``csls`` always rank alike (csls is twice distance); both are offered as their scores read
differently.
"""

from __future__ import annotations

import numpy as np

RERANK_MODES = ("margin", "distance", "csls", "none")
# The additive (distance) margin is the default: on the shared sample it gains as much as the ratio
# with the bundled model, and it stays stable for models whose space is centred (cosines near 0,
# where dividing by the neighbourhood means swings the scores; measured in the README).
DEFAULT_RERANK = "distance"
# Every image stores r(y) for these k (its mean cosine to its k nearest bank texts), so margin_k can
# be chosen per call from them; 1-16 covers the usual choices, the rest the wide neighbourhoods
# that work best with babel-lite (README, "Margin reranking").
MARGIN_KS = tuple(range(1, 17)) + (32, 64, 128, 256)
MAX_MARGIN_K = MARGIN_KS[-1]
# Measured on the shared 1000-photo sample, all 93 Babel-ImageNet languages (README, docs/eval/):
# mean non-English recall@10 rises with k up to about 256 and no language loses there, while k = 4
# loses in a third of them (a small neighbourhood mostly holds an image's own class names).
DEFAULT_MARGIN_K = 256
# Reranking can only reorder what the candidate search returns: search this many, keep k.
DEFAULT_CANDIDATES = 200

# A ratio needs a positive denominator; cosines of real embedding models are well above this.
_MIN_DENOMINATOR = 1e-6


def check_margin_k(k: int) -> None:
    if k not in MARGIN_KS or isinstance(k, bool):
        raise ValueError(f"margin k must be 1 to 16, 32, 64, 128 or 256, got {k!r}")


def term_ladder(top: np.ndarray) -> np.ndarray:
    """(n, len(MARGIN_KS)) means of the k best of each best-first row, for every k in MARGIN_KS.

    A row shorter than some k (a small bank) averages all it has.
    """
    top = np.asarray(top, dtype=np.float64)
    means = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    columns = [min(k, top.shape[1]) - 1 for k in MARGIN_KS]
    return means[:, columns].astype(np.float32)


def ladder_column(k: int) -> int:
    """Where r(y) for this k sits in a stored ladder row."""
    check_margin_k(k)
    return MARGIN_KS.index(k)


def query_terms(candidate_cosines: np.ndarray, k: int) -> np.ndarray:
    """r(q): mean of each row's k best cosines; missing candidates (-inf or NaN) are left out.

    ``candidate_cosines`` is (n_queries, n_candidates); a row with fewer than k real candidates
    averages the ones it has, and a row with none gets 0.
    """
    cos = np.asarray(candidate_cosines, dtype=np.float64)
    if cos.ndim != 2:
        raise ValueError("candidate_cosines must be 2-d (queries, candidates)")
    if cos.shape[1] == 0:
        return np.zeros(len(cos))
    top = -np.sort(-np.where(np.isfinite(cos), cos, -np.inf), axis=1)[:, : max(1, int(k))]
    valid = np.isfinite(top)
    sums = np.where(valid, top, 0.0).sum(axis=1)
    return sums / np.maximum(valid.sum(axis=1), 1)


def rerank_scores(
    cosines: np.ndarray, query_term: np.ndarray, image_term: np.ndarray, mode: str
) -> np.ndarray:
    """Final scores for (n_queries, n_candidates) cosines; query_term is (n_queries,), image_term
    has the cosines' shape. Higher is better in every mode."""
    cos = np.asarray(cosines, dtype=np.float64)
    if mode == "none":
        return cos.copy()
    rq = np.asarray(query_term, dtype=np.float64).reshape(-1, 1)
    ry = np.asarray(image_term, dtype=np.float64)
    if mode == "margin":
        return cos / np.maximum((rq + ry) / 2.0, _MIN_DENOMINATOR)
    if mode == "distance":
        return cos - (rq + ry) / 2.0
    if mode == "csls":
        return 2.0 * cos - rq - ry
    raise ValueError(f"unknown rerank mode {mode!r}; choose one of {', '.join(RERANK_MODES)}")


def rerank(
    cosines: np.ndarray,
    ids: np.ndarray,
    image_term: np.ndarray,
    mode: str,
    k: int,
    keep: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder candidates by ``mode``; returns the best ``keep`` as (scores, ids, cosines).

    ``cosines``/``ids``/``image_term`` are (n_queries, n_candidates); missing slots have id -1.
    ``image_term`` is r(y) of each candidate for this k. Ties keep the candidate search's order.
    """
    cos = np.asarray(cosines, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    missing = (ids < 0) | ~np.isfinite(cos)
    cos = np.where(missing, -np.inf, cos)
    rq = query_terms(cos, k)
    ry = np.where(missing, 0.0, np.asarray(image_term, dtype=np.float64))
    scores = rerank_scores(np.where(missing, 0.0, cos), rq, ry, mode)
    scores[missing] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    out_scores = np.take_along_axis(scores, order, axis=1)
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_cos = np.take_along_axis(cos, order, axis=1)
    out_ids[~np.isfinite(out_scores)] = -1
    return out_scores, out_ids, out_cos
