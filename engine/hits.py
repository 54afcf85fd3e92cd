"""Hit: one search result, as every search of the engine returns it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Hit"]


@dataclass
class Hit:
    """One search result: the catalog id, the image path, its final (reranked) score, its raw
    cosine to the query, and the catalog row."""

    id: int
    path: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    cosine: float | None = None
    # "likely relevant" by the index's calibration (engine.relevance); None where there is none (image
    # queries, an index without a query bank)
    relevant: bool | None = None
    # ids of the near-duplicates folded into this hit (collapse=True), best first
    similar: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        cosine = self.score if self.cosine is None else self.cosine
        return {
            "id": self.id,
            "path": self.path,
            "score": round(float(self.score), 6),
            "cosine": round(float(cosine), 6),
            "relevant": self.relevant,
            "similar": list(self.similar),
        }
