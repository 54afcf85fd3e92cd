"""How well a "likely relevant" rule tells a query's true photo from the rest, on the shared sample.

    python scripts/relevance_sweep.py INDEX --labels LABELS.json --truth TRUTH.tsv [--languages N]

For the first N languages' queries (every class name is a query; its one photo is the truth), the
top-10 hits of the default search are labelled true/false; each rule is scored by precision (flagged
hits that are the truth) and recall (truths in the top 10 that are flagged). The index-level
calibration (engine.relevance) is computed from the index's own query bank, without labels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from babelsearch.engine import SearchEngine
from babelsearch.evaluation.run import _ids_by_path, query_vectors
from babelsearch.evaluation.truth import load_eval_set


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("index")
    parser.add_argument("--labels", required=True)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--languages", type=int, default=10)
    parser.add_argument("--cache", default="data/eval-cache")
    args = parser.parse_args()
    engine = SearchEngine.open(args.index)
    eval_set = load_eval_set(Path(args.truth), Path(args.labels))
    id_of = _ids_by_path(engine.index_dir)
    languages = sorted(eval_set.queries)[: args.languages] if args.languages else sorted(eval_set.queries)
    scores, truth = [], []
    for language in languages:
        pairs = [(t, {id_of[p] for p in paths if p in id_of}) for t, paths in eval_set.queries[language]]
        pairs = [(t, ids) for t, ids in pairs if ids and t.strip()]
        vectors = query_vectors(engine, [t for t, _ in pairs], args.cache)
        for row, (_, ids) in zip(engine.search_vectors(vectors, k=10), pairs):
            for hit in row:
                scores.append(hit.score)
                truth.append(hit.id in ids)
    scores_a, truth_a = np.array(scores), np.array(truth)
    queries = len(scores_a) // 10
    found = truth_a.sum()
    print(f"{len(languages)} languages, {queries} queries, {found} truths in the top 10 ({found / queries:.3f})")
    print(
        f"score of truths: median {np.median(scores_a[truth_a]):.4f}; of others: median {np.median(scores_a[~truth_a]):.4f}"
    )
    calibration = engine.relevance_calibration()
    print("calibration:", calibration)
    print("| threshold | precision | recall | F1 | flagged per query |")
    print("|---|---:|---:|---:|---:|")
    rows = [("calibrated", engine.relevance_threshold())] if engine.relevance_threshold() is not None else []
    rows += [(f"{q:.4f}", q) for q in np.quantile(scores_a, [0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98])]
    for name, threshold in rows:
        flagged = scores_a >= threshold
        precision = (flagged & truth_a).sum() / max(flagged.sum(), 1)
        recall = (flagged & truth_a).sum() / max(found, 1)
        f1 = 2 * precision * recall / max(precision + recall, 1e-9)
        print(
            f"| {name} ({threshold:.4f}) | {precision:.3f} | {recall:.3f} | {f1:.3f} | {flagged.sum() / queries:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
