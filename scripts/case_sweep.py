"""Recall@10 per language for three ways of cleaning a babel-lite query before encoding: how the
query normalisation was chosen (issue: German nouns are capitalised, and e5 may know "Hund" better
than "hund").

    python scripts/case_sweep.py INDEX --labels LABELS.json --truth TRUTH.tsv [--rerank none]

Variants: ``lower`` (NFKC, lower case, whitespace collapsed), ``nfkc`` (NFKC, whitespace collapsed,
case kept), ``raw`` (whitespace collapsed only). Plain cosine by default, so the comparison does not
depend on query-bank terms computed with one of the variants.
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from babelsearch.engine import SearchEngine  # noqa: E402
from babelsearch.engine.encoders import babel_lite  # noqa: E402
from babelsearch.evaluation import evaluate, load_eval_set  # noqa: E402

VARIANTS = {
    "lower": lambda text: " ".join(unicodedata.normalize("NFKC", text).lower().split()),
    "nfkc": lambda text: " ".join(unicodedata.normalize("NFKC", text).split()),
    "raw": lambda text: " ".join(text.split()),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index")
    parser.add_argument("--labels", required=True)
    parser.add_argument("--truth", required=True)
    parser.add_argument("--languages", default=None)
    parser.add_argument("--rerank", default="none", help="rerank mode, as for `babelsearch eval`")
    args = parser.parse_args()
    eval_set = load_eval_set(args.truth, args.labels, args.languages.split(",") if args.languages else None)
    engine = SearchEngine.open(args.index)
    shipped = babel_lite.normalize_query_text
    results: dict[str, dict[str, float]] = {}
    try:
        for name, clean in VARIANTS.items():
            babel_lite.normalize_query_text = clean  # a script of its own: nothing else shares this encoder
            report = evaluate(engine, eval_set, ks=[10], modes=[args.rerank])
            results[name] = {r.language: r.recall[args.rerank][10] for r in report.languages}
            print(f"{name}: done", file=sys.stderr)
    finally:
        babel_lite.normalize_query_text = shipped
    languages = sorted(results["lower"])
    non_english = [lang for lang in languages if lang.upper() != "EN"]
    print(
        f"| variant | mean R@10, all {len(languages)} | mean R@10, {len(non_english)} non-English | "
        "languages > 1 point below lower | worst language vs lower | best language vs lower |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, recall in results.items():
        mean = sum(recall.values()) / len(recall)
        mean_ne = sum(recall[lang] for lang in non_english) / len(non_english)
        deltas = {lang: recall[lang] - results["lower"][lang] for lang in languages}
        worst = min(deltas, key=deltas.__getitem__)
        best = max(deltas, key=deltas.__getitem__)
        losers = sum(1 for d in deltas.values() if d < -0.01)
        print(
            f"| {name} | {100 * mean:.2f} | {100 * mean_ne:.2f} | {losers} | {worst} {100 * deltas[worst]:+.1f} | "
            f"{best} {100 * deltas[best]:+.1f} |"
        )
    print()
    print("| language | " + " | ".join(VARIANTS) + " |")
    print("|---|" + "---:|" * len(VARIANTS))
    for lang in languages:
        print(f"| {lang} | " + " | ".join(f"{100 * results[name][lang]:.1f}" for name in VARIANTS) + " |")


if __name__ == "__main__":
    main()
