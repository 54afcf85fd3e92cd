"""Re-measure the quality floors the slow tests guard, and rewrite their files.

- ``tests/quality_floors.tsv``: Babel-ImageNet class names, all 93 languages, on ../shared's 1000-photo
  ImageNet sample: the first 60 names of each language (what ``tests/test_quality_floors.py`` runs) and
  every name (``measured_all``);
- ``tests/caption_floors.tsv``: the caption test pools (Flickr8k: en, de, fr, cs, zh; CC3M: en).

Each floor is the measurement less one query. The indexes are built as the tests build them (the
index's default reranking, ``build_index`` with the model's defaults) and kept in ``data/quality``.
Before writing, the new class-name figures are compared with the floors being replaced: a language
more than 2 points under its old floor is listed (the model-change rule of issue 22).

    .venv/bin/python scripts/measure_floors.py [--dry-run]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import BABEL, CAPTIONS, SAMPLE, WORK, fresh_index  # noqa: E402

QUALITY_FLOORS = ROOT / "tests" / "quality_floors.tsv"
CAPTION_FLOORS = ROOT / "tests" / "caption_floors.tsv"
QUERIES_PER_LANGUAGE = 60  # tests/test_quality_floors.py's subset
POOLS = {"flickr8k": "test-flickr8k.tsv", "cc3m": "test-cc3m.tsv"}


def old_floors() -> dict[str, float]:
    rows = [
        line.split("\t") for line in QUALITY_FLOORS.read_text("utf-8").splitlines() if line and not line.startswith("#")
    ]
    return {row[0]: float(row[2]) for row in rows[1:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    args = parser.parse_args()

    from babelsearch.engine import SearchEngine
    from babelsearch.engine.encoders import get_encoder
    from babelsearch.evaluation import evaluate, load_eval_set

    version = get_encoder("babel-lite").version
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    cache = WORK / "queries"  # shared with bench_quality.py

    sample_index = fresh_index([SAMPLE / "images"], WORK / "imagenet-sample", "babel-lite")
    engine = SearchEngine.open(sample_index)
    mode = engine.rerank_defaults["mode"]
    margin_k = engine.rerank_defaults.get("margin_k", "all")
    full = load_eval_set(SAMPLE / "labels.tsv", BABEL)
    first = dataclasses.replace(full, queries={lang: q[:QUERIES_PER_LANGUAGE] for lang, q in full.queries.items()})
    subset = {r.language: r for r in evaluate(engine, first, ks=[10], modes=[mode], cache_dir=cache).languages}
    every = {r.language: r for r in evaluate(engine, full, ks=[10], modes=[mode], cache_dir=cache).languages}

    before = old_floors()
    under = sorted((subset[lang].recall[mode][10] - floor, lang) for lang, floor in before.items() if lang in subset)
    print(f"class names, first {QUERIES_PER_LANGUAGE} per language, {mode}: against the floors being replaced")
    print(
        "  more than 2 points under the old floor: "
        + (", ".join(f"{lang} {d:+.3f}" for d, lang in under if d < -0.02) or "none")
    )
    print("  lowest: " + ", ".join(f"{lang} {d:+.3f}" for d, lang in under[:5]))
    mean_all = sum(r.recall[mode][10] for r in every.values()) / len(every)
    non_en = [r.recall[mode][10] for lang, r in every.items() if lang != "EN"]
    print(
        f"  every name: EN {every['EN'].recall[mode][10]:.4f}, mean of {len(non_en)} others {sum(non_en) / len(non_en):.4f}"
    )

    quality = [
        "# recall@10 floors per language, all 93 Babel-ImageNet languages: each is what was measured less one query,",
        "# so losing two of a language's (up to) 60 queries fails (~3 points), losing one is the allowance for noise.",
        f"# Measured {today} (UTC) by scripts/measure_floors.py: the index built as the tests' shared_sample_index fixture",
        f"#   builds it (babel-lite, version {version}): build_index([../shared/data/imagenet-sample/images], IDX,",
        "#   model='babel-lite'); evaluate() (babelsearch eval's library call) over the first 60 class names of each",
        "#   language (QUERIES_PER_LANGUAGE in tests/test_quality_floors.py: the whole 37,438 take 10 CPU-minutes to",
        f"#   encode, these 5,580 about one), rerank {mode} (the index default), margin_k {margin_k}, k 10.",
        "# measured_all: the same over every class name (`babelsearch eval IDX --labels ../shared/data/babel-imagenet/",
        f"#   babel_imagenet.json --truth ../shared/data/imagenet-sample/labels.tsv --rerank {mode} --k 10`; mean {mean_all:.4f}).",
        "# After a deliberate quality change, re-measure both and rewrite this file (scripts/measure_floors.py).",
        "language\tqueries\tfloor\tmeasured\tmeasured_all",
    ]
    for lang in sorted(subset):
        row = subset[lang]
        measured = row.recall[mode][10]
        floor = max(0.0, measured - 1 / row.queries)
        quality.append(f"{lang}\t{row.queries}\t{floor:.4f}\t{measured:.4f}\t{every[lang].recall[mode][10]:.4f}")

    captions = [
        "# caption recall@10 floors per test pool and language (../shared/data/captions, the XTD10 protocol: one",
        "# caption per photo and language, a caption's own photo is the one relevant image): measured less one query.",
        f"# Measured {today} (UTC) by scripts/measure_floors.py: babelsearch index POOL.tsv --index IDX (babel-lite,",
        f"#   version {version}); `babelsearch eval IDX --truth POOL.tsv --k 10` with the index default rerank {mode},",
        f"#   margin_k {margin_k}, 200 candidates. tests/test_caption_floors.py runs the same through the library.",
        "pool\tlanguage\tqueries\tfloor\tmeasured",
    ]
    for pool, name in POOLS.items():
        truth = CAPTIONS / name
        index_dir = fresh_index([truth], WORK / f"{pool}-test", "babel-lite")
        pool_engine = SearchEngine.open(index_dir)
        pool_mode = pool_engine.rerank_defaults["mode"]
        report = evaluate(pool_engine, load_eval_set(truth), ks=[10], modes=[pool_mode], cache_dir=cache)
        for row in report.languages:
            measured = row.recall[pool_mode][10]
            captions.append(
                f"{pool}\t{row.language.lower()}\t{row.queries}\t{measured - 1 / row.queries:.4f}\t{measured:.4f}"
            )
            print(f"{pool} {row.language}: {measured:.4f} ({row.queries} queries, {pool_mode})")

    if not args.dry_run:
        QUALITY_FLOORS.write_text("\n".join(quality) + "\n", "utf-8")
        CAPTION_FLOORS.write_text("\n".join(captions) + "\n", "utf-8")
        print(f"wrote {QUALITY_FLOORS.relative_to(ROOT)} and {CAPTION_FLOORS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
