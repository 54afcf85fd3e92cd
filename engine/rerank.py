"""Rerank search candidates against hubness: margin (ratio, distance), CSLS, or none. Pure numpy.

Artetxe & Schwenk, "Margin-based Parallel Corpus Mining with Multilingual Sentence Embeddings"
(ACL 2019), score a pair (q, y) relative to the neighbourhoods of both sides:

    margin    cos(q, y) / ((r(q) + r(y)) / 2)
    distance  cos(q, y) - (r(q) + r(y)) / 2
    csls      2 cos(q, y) - r(q) - r(y)        (Conneau et al. 2018)
    none      cos(q, y)

r(q) is the mean of the query's k best cosines over its candidate images, r(y) the mean of the image's
k best cosines over a bank of typical queries (``engine.bank``), computed at index time. A "hub"
image, close to every query, has a large r(y) and is pushed down. ``distance`` and ``csls`` always rank
alike (csls is twice distance); both are offered because their scores read differently.
"""

from __future__ import annotations

import numpy as np

RERANK_MODES = ("margin", "distance", "csls", "none")
# Measured on the shared 1000-photo sample, all 93 Babel-ImageNet languages (README, docs/eval/):
# recall@10 is flat for k from about 4 to 16; 8 sits in the middle of that plateau.
DEFAULT_RERANK = "margin"
DEFAULT_MARGIN_K = 8
# Images keep their 16 best bank cosines, so any margin_k up to this works per call.
MAX_MARGIN_K = 16
# Reranking can only reorder what the candidate search returns: search this many, keep k.
DEFAULT_CANDIDATES = 100

# A ratio needs a positive denominator; cosines of real embedding models are well above this.
_MIN_DENOMINATOR = 1e-6


def query_terms(candidate_cosines: np.ndarray, k: int) -> np.ndarray:
    """r(q): mean of each row's k best cosines; missing candidates (-inf or NaN) are left out.

    ``candidate_cosines`` is (n_queries, n_candidates); a row with fewer than k real candidates
    averages the ones it has, and a row with none gets 0.
    """
    cos = np.asarray(candidate_cosines, dtype=np.float64)
    if cos.ndim != 2:
        raise ValueError("candidate_cosines must be 2-d (queries, candidates)")
    valid = np.isfinite(cos)
    filled = np.where(valid, cos, -np.inf)
    k = max(1, min(int(k), cos.shape[1])) if cos.shape[1] else 1
    if cos.shape[1] == 0:
        return np.zeros(len(cos))
    top = -np.sort(-filled, axis=1)[:, :k]
    top_valid = np.isfinite(top)
    counts = top_valid.sum(axis=1)
    sums = np.where(top_valid, top, 0.0).sum(axis=1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def image_terms(bank_top: np.ndarray, k: int) -> np.ndarray:
    """r(y): mean of each image's k best bank cosines, from its stored best-first list (…, MAX_MARGIN_K)."""
    top = np.asarray(bank_top, dtype=np.float64)
    if not 1 <= k <= top.shape[-1]:
        raise ValueError(f"margin k must be from 1 to {top.shape[-1]}, got {k}")
    return top[..., :k].mean(axis=-1)


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
    bank_top: np.ndarray,
    mode: str,
    k: int,
    keep: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder candidates by ``mode``; returns the best ``keep`` as (scores, ids, cosines).

    ``cosines``/``ids`` are (n_queries, n_candidates), missing slots id -1; ``bank_top`` is
    (n_queries, n_candidates, >=k) stored bank cosines per candidate (rows of missing slots ignored).
    Ties keep the candidate search's order.
    """
    cos = np.asarray(cosines, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    missing = (ids < 0) | ~np.isfinite(cos)
    cos = np.where(missing, -np.inf, cos)
    rq = query_terms(cos, k)
    ry = image_terms(bank_top, k) if mode != "none" else np.zeros_like(cos)
    scores = rerank_scores(np.where(missing, 0.0, cos), rq, np.where(missing, 0.0, ry), mode)
    scores[missing] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :keep]
    out_scores = np.take_along_axis(scores, order, axis=1)
    out_ids = np.take_along_axis(ids, order, axis=1)
    out_cos = np.take_along_axis(cos, order, axis=1)
    out_ids[~np.isfinite(out_scores)] = -1
    return out_scores, out_ids, out_cos
