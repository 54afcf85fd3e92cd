"""Mean recall@10 (all languages, non-English) per rerank mode and margin_k, plus plain cosine: how the
defaults were chosen. Queries are encoded once (``--cache``) and every setting reranks the same candidates.

    python scripts/margin_sweep.py INDEX --labels LABELS.json --truth TRUTH.tsv [--cache DIR]
    python scripts/margin_sweep.py INDEX --truth CAPTIONS.tsv --build --model-file MODEL.npz

``--build`` indexes the truth file's photos into INDEX first (a caption truth file is a path list);
``--model-file`` puts another babel-lite model file (a training run's, say one that held out the
photos swept here) behind the ``babel-lite`` spec for this process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from babelsearch.engine import SearchEngine  # noqa: E402
from babelsearch.evaluation import evaluate, load_eval_set  # noqa: E402

KS = (4, 8, 16, 32, 64, 128, 256, "all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index")
    parser.add_argument("--labels")
    parser.add_argument("--truth", required=True)
    parser.add_argument("--languages", default=None)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--modes", default="distance,margin")
    parser.add_argument("--build", action="store_true", help="index the truth file's photos into INDEX first")
    parser.add_argument("--model-file", default=None, help="a babel-lite model file to use instead of the shipped one")
    args = parser.parse_args()
    if args.model_file:
        from babelsearch.engine.encoders import register_encoder
        from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder

        trial = BabelLiteEncoder(model_file=args.model_file)
        register_encoder("babel-lite", lambda spec: trial)
    if args.build and not Path(args.index, "manifest.json").exists():
        from babelsearch.indexer import build_index

        build_index([args.truth], args.index, model="babel-lite", progress=False)
    eval_set = load_eval_set(args.truth, args.labels, args.languages.split(",") if args.languages else None)
    engine = SearchEngine.open(args.index)
    base = evaluate(engine, eval_set, ks=[10], modes=["none"], cache_dir=args.cache)
    nonen = [r for r in base.languages if r.language.lower() != "en"]
    print(f"{len(base.languages)} languages, {engine.rerank_defaults['candidates']} candidates\n")
    print("| rerank | margin_k | mean R@10, all | mean R@10, non-English | languages below cosine |")
    print("|---|---:|---:|---:|---:|")
    print(f"| none | - | {100 * base.mean('none', 10):.1f} | {100 * base.mean('none', 10, True):.1f} | - |")
    for mode in args.modes.split(","):
        for k in KS:
            report = evaluate(engine, eval_set, ks=[10], modes=[mode], margin_k=k, cache_dir=args.cache)
            worse = sum(
                r.recall[mode][10] < b.recall["none"][10]
                for r, b in zip(report.languages, base.languages)
                if b in nonen
            )
            print(
                f"| {mode} | {k} | {100 * report.mean(mode, 10):.1f} | "
                f"{100 * report.mean(mode, 10, True):.1f} | {worse} of {len(nonen)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
