"""Recall@10 per language for each share of a Chinese-character query given to its dictionary glosses
(babel-lite's ``gloss_weight``): how the default was chosen. Only languages with such queries change.

    python scripts/gloss_sweep.py INDEX --labels LABELS.json --truth TRUTH.tsv [--languages zh,ja]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from babelsearch.engine import SearchEngine  # noqa: E402
from babelsearch.evaluation import evaluate, load_eval_set  # noqa: E402

WEIGHTS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index")
    parser.add_argument("--labels")
    parser.add_argument("--truth", required=True)
    parser.add_argument("--languages", default="zh,ja")
    parser.add_argument("--rerank", default="distance", help="rerank mode, as for `babelsearch eval`")
    args = parser.parse_args()
    eval_set = load_eval_set(args.truth, args.labels, args.languages.split(","))
    engine = SearchEngine.open(args.index)
    if not hasattr(engine.encoder, "gloss_weight"):
        sys.exit(f"{engine.encoder.name} does not gloss queries")
    default = engine.encoder.gloss_weight
    rows = []
    try:
        for weight in WEIGHTS:
            engine.encoder.gloss_weight = weight  # a script of its own: nothing else shares this encoder
            report = evaluate(engine, eval_set, ks=[10], modes=[args.rerank])
            rows.append((weight, {r.language: r.recall[args.rerank][10] for r in report.languages}))
    finally:
        engine.encoder.gloss_weight = default
    languages = sorted(rows[0][1])
    print("| gloss_weight | " + " | ".join(f"{lang} R@10" for lang in languages) + " |")
    print("|---:|" + "---:|" * len(languages))
    for weight, recall in rows:
        mark = " (default)" if weight == default else ""
        print(f"| {weight}{mark} | " + " | ".join(f"{100 * recall[lang]:.1f}" for lang in languages) + " |")


if __name__ == "__main__":
    main()
