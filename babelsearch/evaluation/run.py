"""Running ``babelsearch eval``: every query of every language, once per rerank mode, on one index.

recall@k is the share of queries with at least one relevant image among the first k results,
averaged per language; the means are macro averages over languages. Only the engine's read side is
used (``SearchEngine.search_vectors`` and its catalog); the engine knows nothing of this module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from babelsearch.engine.bank import embed_texts_cached, vectors_key
from babelsearch.engine.catalog import IMAGES, open_catalog
from babelsearch.engine.rerank import RERANK_MODES

from .report import EvalReport, LanguageResult
from .truth import EvalSet, EvaluationError

if TYPE_CHECKING:
    from babelsearch.engine import SearchEngine


def evaluate(
    engine: SearchEngine,
    eval_set: EvalSet,
    ks: Iterable[int] = (1, 5, 10),
    modes: Iterable[str] = ("distance", "margin", "none"),
    margin_k: int | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> EvalReport:
    """Search every query of every language once per rerank mode; recall@k per language and mode.

    Queries are encoded once per language (and cached in ``cache_dir`` when given) and then searched
    with each mode, so the modes differ only in their reranking.
    """
    started = time.perf_counter()
    ks = sorted({int(k) for k in ks})
    modes = list(dict.fromkeys(modes))
    if not ks or ks[0] < 1:
        raise EvaluationError("k values must be positive integers")
    bad = [m for m in modes if m not in RERANK_MODES]
    if bad or not modes:
        raise EvaluationError(f"rerank modes must be among {', '.join(RERANK_MODES)}, got {', '.join(bad) or 'none'}")
    id_of = _ids_by_path(engine.index_dir)
    all_truth = {p for queries in eval_set.queries.values() for _, paths in queries for p in paths}
    matched = all_truth & id_of.keys()
    if not matched:
        raise EvaluationError(
            f"none of the {len(all_truth)} images named by the truth file is in {engine.index_dir}; "
            f"index them first (paths must match: absolute, or relative to the truth file)"
        )
    defaults = engine.rerank_defaults
    margin_k = defaults["margin_k"] if margin_k is None else margin_k
    report = EvalReport(
        index_dir=str(engine.index_dir),
        model=engine.manifest.model,
        kind=eval_set.kind,
        modes=modes,
        ks=ks,
        margin_k=margin_k,
        candidates=defaults["candidates"],
        truth_images=len(all_truth),
        matched_images=len(matched),
    )
    from tqdm import tqdm

    for language in tqdm(list(eval_set.queries), unit="lang", disable=not progress, dynamic_ncols=True):
        pairs = [(text, {id_of[p] for p in paths if p in id_of}) for text, paths in eval_set.queries[language]]
        usable = [(text, ids) for text, ids in pairs if ids and text.strip()]
        result = LanguageResult(language, len(usable), {m: {} for m in modes}, skipped=len(pairs) - len(usable))
        if usable:
            vectors = query_vectors(engine, [text for text, _ in usable], cache_dir)
            for mode in modes:
                hits = engine.search_vectors(vectors, k=max(ks), rerank=mode, margin_k=margin_k)
                for k in ks:
                    found = [any(h.id in ids for h in row[:k]) for row, (_, ids) in zip(hits, usable)]
                    result.recall[mode][k] = float(np.mean(found))
                _count_flags(report.flags.setdefault(mode, dict.fromkeys(_FLAG_COUNTS, 0)), hits, usable)
            report.languages.append(result)
    if not report.languages:
        raise EvaluationError("no language has a query whose relevant images are in the index")
    report.seconds = time.perf_counter() - started
    return report


_FLAG_COUNTS = ("queries", "flagged", "flagged_relevant", "queries_found", "queries_flagged", "unflaggable")


def _count_flags(counts: dict[str, int], hits, usable) -> None:
    for row, (_, ids) in zip(hits, usable):
        counts["queries"] += 1
        counts["unflaggable"] += any(h.relevant is None for h in row)
        counts["flagged"] += sum(bool(h.relevant) for h in row)
        counts["flagged_relevant"] += sum(bool(h.relevant) and h.id in ids for h in row)
        counts["queries_found"] += any(h.id in ids for h in row)
        counts["queries_flagged"] += any(bool(h.relevant) and h.id in ids for h in row)


def query_vectors(engine: SearchEngine, texts: list[str], cache_dir: str | os.PathLike | None) -> np.ndarray:
    """The texts encoded by the index's model, from (or into) ``cache_dir`` when given."""
    if cache_dir is None:
        return np.concatenate([engine.encoder.encode_texts(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    # the key covers the model's name, what it makes of probe texts and the texts, so reruns with
    # another model (or a changed one under the same name) never reuse stale vectors
    path = Path(cache_dir) / f"queries-{vectors_key(engine.encoder, texts)}.npy"
    return embed_texts_cached(engine.encoder, texts, path)


def _ids_by_path(index_dir: str | os.PathLike) -> dict[str, int]:
    # a connection of our own: the engine's is per thread and private to it
    db = open_catalog(index_dir, readonly=True)
    try:
        return {row["path"]: row["id"] for row in db.query(f"select id, path from {IMAGES}")}
    finally:
        db.close()
