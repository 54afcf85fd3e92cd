"""Rerank search candidates against hubness: margin (ratio, distance), CSLS, or none. Pure numpy.

Artetxe & Schwenk, "Margin-based Parallel Corpus Mining with Multilingual Sentence Embeddings"
(ACL 2019), score a pair (q, y) relative to the neighbourhoods of both sides:

    margin    cos(q, y) / ((r(q) + r(y)) / 2)
    distance  cos(q, y) - (r(q) + r(y)) / 2
    csls      2 cos(q, y) - r(q) - r(y)        (Conneau et al. 2018)
    none      cos(q, y)

r(q) is the mean of the query's k best cosines over its candidate images, r(y) the mean of the image's
k best cosines over a bank of typical queries (``engine.bank``), computed at index time for every k
in MARGIN_KS (k = "all": the whole bank). A "hub" image, close to every query, has a large r(y) and is pushed down. ``distance``
and ``csls`` always rank alike (csls is twice distance); both are offered as their scores read
differently.
"""

from __future__ import annotations

import numpy as np

RERANK_MODES = ("margin", "distance", "csls", "none")
ALL = "all"  # margin_k "all": the image's neighbourhood is the whole bank
# Every image stores r(y) for these k (its mean cosine to its k nearest bank texts), so margin_k can
# be chosen per call: 1-16 are the usual choices, the rest wider neighbourhoods up to the whole bank.
MARGIN_KS: tuple[int | str, ...] = tuple(range(1, 17)) + (32, 64, 128, 256, ALL)
DEEPEST_K = 256  # the widest neighbourhood below "all"; the nearest bank texts searched per image
# Measured on the shared 1000-photo sample, all 93 Babel-ImageNet languages (README, docs/eval/).
# With the bundled model every k helps and the whole bank helps most; with a centred model
# (babel-lite's planned prototypes and centring) every setting but this one lost recall, and this
# one neither lost nor gained. With k = "all", r(y) is the image's cosine to the bank's mean
# query, so the distance margin takes out exactly the "close to every query" direction: where a
# model has already removed it, the rerank changes nothing. The ratio divides by neighbourhood
# means that are near 0 in a centred space and lost recall there at every k.
DEFAULT_RERANK = "distance"
DEFAULT_MARGIN_K: int | str = ALL
# Reranking can only reorder what the candidate search returns: search this many, keep k.
DEFAULT_CANDIDATES = 200

# A ratio needs a positive denominator; cosines of real embedding models are well above this.
_MIN_DENOMINATOR = 1e-6


def check_margin_k(k: int | str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, str, np.integer)) or k not in MARGIN_KS:
        raise ValueError(f"margin k must be 1 to 16, 32, 64, 128, 256 or 'all', got {k!r}")


def term_ladder(top: np.ndarray, bank_mean: np.ndarray) -> np.ndarray:
    """(n, len(MARGIN_KS)) r(y) for every k in MARGIN_KS, from each image's best-first bank cosines
    ``top`` (n, <= DEEPEST_K) and its mean cosine over the whole bank ``bank_mean`` (n,).

    A row shorter than some k (a small bank) averages all it has.
    """
    top = np.asarray(top, dtype=np.float64)
    means = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    columns = [min(k, top.shape[1]) - 1 for k in MARGIN_KS if k != ALL]
    return np.column_stack([means[:, columns], np.asarray(bank_mean, dtype=np.float64)]).astype(np.float32)


def ladder_column(k: int | str) -> int:
    """Where r(y) for this k sits in a stored ladder row."""
    check_margin_k(k)
    return MARGIN_KS.index(k)


def query_terms(candidate_cosines: np.ndarray, k: int | str) -> np.ndarray:
    """r(q): mean of each row's k best cosines; missing candidates (-inf or NaN) are left out.

    ``candidate_cosines`` is (n_queries, n_candidates); a row with fewer than k real candidates
    (or k = "all") averages the ones it has, and a row with none gets 0.
    """
    cos = np.asarray(candidate_cosines, dtype=np.float64)
    if cos.ndim != 2:
        raise ValueError("candidate_cosines must be 2-d (queries, candidates)")
    if cos.shape[1] == 0:
        return np.zeros(len(cos))
    depth = cos.shape[1] if k == ALL else max(1, int(k))
    top = -np.sort(-np.where(np.isfinite(cos), cos, -np.inf), axis=1)[:, :depth]
    valid = np.isfinite(top)
    sums = np.where(valid, top, 0.0).sum(axis=1)
    return sums / np.maximum(valid.sum(axis=1), 1)


def rerank_scores(cosines: np.ndarray, query_term: np.ndarray, image_term: np.ndarray, mode: str) -> np.ndarray:
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
    k: int | str,
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
