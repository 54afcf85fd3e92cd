"""Where relevance ends: a per-index threshold on the final score, from the index's own query bank.

A query describes a few photos of a collection and not the rest, so the scores of its candidate pool
are mostly those of photos it does not describe. The bank's typical queries, searched as a user's
query is (same rerank, same margin_k), give that distribution for this index and this model: its mean
and spread. A hit is "likely relevant" when its score stands RELEVANCE_Z spreads above that mean.
The threshold is measured, not guessed per model: each model's cosines have their own scale, and the
z rule carries over where a fixed number would not. RELEVANCE_Z was chosen once on the shared sample
(scripts/relevance_sweep.py; precision and recall in the README), not per query.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["RELEVANCE_Z", "SAMPLE_QUERIES", "Calibration", "Calibrations", "calibrate"]

RELEVANCE_Z = 2.5
# bank queries searched to calibrate (evenly spaced through the bank, so the same ones every time)
SAMPLE_QUERIES = 256


@dataclass(frozen=True)
class Calibration:
    """The score distribution of an index's bank queries under one (rerank mode, margin_k)."""

    mode: str
    margin_k: int | str
    mean: float
    std: float
    z: float
    queries: int

    @property
    def threshold(self) -> float:
        return self.mean + self.z * self.std

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "threshold": round(self.threshold, 6)}


def calibrate(
    pool_scores: Callable[[np.ndarray], np.ndarray],
    bank: np.ndarray | None,
    mode: str,
    margin_k: int | str,
    z: float = RELEVANCE_Z,
    sample: int = SAMPLE_QUERIES,
) -> Calibration | None:
    """The calibration of one search setting: ``pool_scores`` maps query vectors to the final scores of
    their candidate pools (a 2-d array, NaN where a pool is short); None without a bank."""
    if bank is None or len(bank) == 0:
        return None
    rows = np.unique(np.linspace(0, len(bank) - 1, num=min(sample, len(bank))).round().astype(int))
    scores = np.asarray(pool_scores(bank[rows]), dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size < 2:
        return None
    return Calibration(mode, margin_k, float(scores.mean()), float(scores.std()), float(z), int(len(rows)))


class Calibrations:
    """Each search setting's calibration, measured once (per engine, so per index generation); safe to
    share between threads. Measured outside the lock: two threads may both measure it the first time."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, int | str], Calibration | None] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int | str], measure: Callable[[], Calibration | None]) -> Calibration | None:
        with self._lock:
            if key in self._found:
                return self._found[key]
        found = measure()
        with self._lock:
            self._found[key] = found
        return found
