# The compiled refine (engine/_refine.c): its interface, for type checkers.
from collections.abc import Sequence

import numpy as np

FAST: int  # 1 where this CPU has the AVX2/F16C kernel the refine needs

def refine(
    queries: np.ndarray,
    ids: np.ndarray,
    stores: Sequence[tuple[np.ndarray, np.ndarray]],
    keep: int,
    scores: np.ndarray,
    out_ids: np.ndarray,
) -> None: ...
