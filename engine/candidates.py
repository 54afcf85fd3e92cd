"""Candidates for one search: approximate scores from the shards' codes, then the exact refine, within
a filter's allowed ids when there is one (how a filter is searched is decided here, not by callers)."""

from __future__ import annotations

import threading

import numpy as np

from .catalog import matching_ids
from .filters import Where
from .shards import ShardSet

__all__ = ["EXACT_FILTER_MAX", "AllowedIds", "scored_candidates"]

# A filter allowing at most this many images is searched exactly among them (their stored vectors): at
# 1% of a million images that is faster than scanning inverted lists for them, and misses none.
EXACT_FILTER_MAX = 32_768
_ALLOWED_CACHE_SIZE = 32  # filters whose allowed ids are kept (a page of results reuses its filter)


class AllowedIds:
    """The sorted ids each filter allows, from the catalog, the last _ALLOWED_CACHE_SIZE kept; one per
    engine, so per index generation. Safe to share between threads."""

    def __init__(self) -> None:
        self._found: dict[Where, np.ndarray] = {}
        self._lock = threading.Lock()

    def get(self, catalog, where: Where | None) -> np.ndarray | None:
        """None for no filter, else the ids ``where`` allows."""
        if where is None:
            return None
        with self._lock:
            found = self._found.get(where)
        if found is None:
            found = matching_ids(catalog, where)
            with self._lock:
                if len(self._found) >= _ALLOWED_CACHE_SIZE:
                    self._found.pop(next(iter(self._found)))
                self._found[where] = found
        return found


def scored_candidates(
    shards: ShardSet,
    queries: np.ndarray,
    n: int,
    nprobe: int | None,
    refine_factor: int,
    allowed: np.ndarray | None = None,
    wanted: int = 0,
    keep: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``keep`` (default n) of n candidates (scores, ids) per query, best first: the codes'
    candidates re-scored exactly when ``refine_factor`` > 1. With ``allowed`` (sorted ids), only
    those: at most EXACT_FILTER_MAX are scored exactly among themselves (no codes, no refine needed);
    more are scanned through the IVF lists with a selector, and every query finds at least ``wanted``
    of them where that many exist."""
    keep = n if keep is None else min(keep, n)
    if allowed is not None and allowed.size <= EXACT_FILTER_MAX:
        return shards.exact_among(queries, allowed, keep)
    scores, ids = _filtered(shards, queries, n, nprobe, allowed, wanted)
    return shards.refine(queries, ids, keep=keep) if refine_factor > 1 else (scores[:, :keep], ids[:, :keep])


def _filtered(
    shards: ShardSet, queries: np.ndarray, n: int, nprobe: int | None, allowed: np.ndarray | None, wanted: int
) -> tuple[np.ndarray, np.ndarray]:
    # A filter that allows a share of the images lets through that share of each inverted list scanned,
    # so nprobe grows by its inverse; if some query still finds fewer than it can, every list is scanned.
    nlist = shards.nlist
    if allowed is None or not nlist:
        return shards.candidates(queries, n, nprobe=nprobe, allowed=allowed)
    share = allowed.size / max(shards.ntotal, 1)
    scaled = min(nlist, int(np.ceil((nprobe or 1) / max(share, 1e-9))))
    scores, ids = shards.candidates(queries, n, nprobe=scaled, allowed=allowed)
    if scaled < nlist and int((ids >= 0).sum(axis=1).min()) < min(wanted, allowed.size):
        scores, ids = shards.candidates(queries, n, nprobe=nlist, allowed=allowed)
    return scores, ids
