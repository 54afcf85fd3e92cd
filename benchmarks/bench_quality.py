"""The bundled model's retrieval quality, as a user gets it (``make bench-quality``); prints markdown tables.

Three evaluations, each through the product's own ``build_index`` and ``evaluate`` (what
``babelsearch index`` and ``babelsearch eval`` run), rerank modes side by side:

- captions, Flickr8k test pool: 1,000 photos, one caption per photo in en, de, fr, cs (Multi30K) and
  zh (Flickr8k-CN) (``../shared/data/captions/test-flickr8k.tsv``: the XTD10 / Multi30K protocol);
- captions, Conceptual Captions test pool: 1,000 web photos, English alt-text (``test-cc3m.tsv``);
- class names, Babel-ImageNet: the shared 1,000-photo ImageNet sample, every class name of all 93
  languages, compared language by language with babel-lite 2 (``docs/quality/babel_lite_2_classes.tsv``).

Indexes are kept in ``data/quality/`` and rebuilt when the model's version changes; query vectors are
cached in ``data/quality/queries``. Only ``test`` photos are read, and none of it trains anything.

    .venv/bin/python benchmarks/bench_quality.py [--modes distance,none] [--skip-classes]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CAPTIONS = SHARED / "captions"
SAMPLE = SHARED / "imagenet-sample"
BABEL = SHARED / "babel-imagenet" / "babel_imagenet.json"
WORK = ROOT / "data" / "quality"
# babel-lite 2's recall@10 per language on the class names (what tests/quality_floors.tsv held before)
BEFORE_CLASSES = ROOT / "docs" / "quality" / "babel_lite_2_classes.tsv"

# Published text-to-image recall@10 on 1k-photo pools, for scale (the README says where each is from).
PUBLISHED = {
    "flickr8k": "CLIP ViT-B/32 on Flickr30k 1k: ~0.9; XLM-R ViT-B/32, XTD10 mean: 0.89",
    "cc3m": "-",
}
# babel-lite 2 (concepts only), measured with the same protocol when the caption set was made
# (../shared/data/captions/README.md), `babelsearch eval`, default reranking
BEFORE = {"flickr8k": {"en": 0.186, "de": 0.155, "fr": 0.154, "cs": 0.145, "zh": 0.148}, "cc3m": {"en": 0.255}}


def fresh_index(sources: list[Path], index_dir: Path, model: str) -> Path:
    """The index of ``sources``, built again when missing or made by another version of the model."""
    from babelsearch.engine.encoders import get_encoder
    from babelsearch.engine.layout import MODEL_VERSION, read_manifest
    from babelsearch.indexer import build_index

    version = str(getattr(get_encoder(model), "version", ""))
    if (index_dir / "manifest.json").exists():
        manifest = read_manifest(index_dir)
        if manifest.model == model and str(manifest.settings.get(MODEL_VERSION, "")) == version:
            return index_dir
        import shutil

        shutil.rmtree(index_dir)
    started = time.perf_counter()
    build_index(sources, index_dir, model=model, progress=False)
    print(f"indexed {index_dir.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return index_dir


def evaluate_pool(index_dir: Path, truth: Path, modes: list[str], labels: Path | None = None):
    from babelsearch.engine import SearchEngine
    from babelsearch.evaluation import evaluate, load_eval_set

    engine = SearchEngine.open(index_dir)
    eval_set = load_eval_set(truth, labels)
    return evaluate(engine, eval_set, ks=(1, 5, 10), modes=modes, cache_dir=WORK / "queries")


def caption_table(name: str, report, modes: list[str]) -> list[str]:
    lines = [
        f"### {name}: text-to-image recall, 1,000-photo pool",
        "",
        "| language | queries | " + " | ".join(f"R@1 / R@5 / R@10 ({m})" for m in modes) + " | before (babel-lite 2) |",
        "|---|---:|" + "---:|" * len(modes) + "---:|",
    ]
    before = BEFORE.get(name, {})
    for row in report.languages:
        cells = [" / ".join(f"{row.recall[m][k]:.3f}" for k in (1, 5, 10)) for m in modes]
        old = before.get(row.language.lower())
        lines.append(f"| {row.language} | {row.queries} | " + " | ".join(cells) + f" | {old if old else '-'} |")
    if len(report.languages) > 1:
        non_english = [r for r in report.languages if r.language.lower() != "en"]
        cells = [f"{sum(r.recall[m][10] for r in non_english) / len(non_english):.3f} (R@10)" for m in modes]
        lines.append(f"| mean of {len(non_english)} non-English | | " + " | ".join(cells) + " | |")
    lines.append(f"\npublished for scale: {PUBLISHED.get(name, '-')}\n")
    return lines


def classes_before() -> dict[str, float]:
    rows = [
        line.split("\t") for line in BEFORE_CLASSES.read_text("utf-8").splitlines() if line and not line.startswith("#")
    ]
    return {row[0]: float(row[1]) for row in rows[1:]}


def class_table(report, mode: str) -> list[str]:
    before = classes_before()
    now = {r.language: r.recall[mode][10] for r in report.languages}
    non_english = [lang for lang in now if lang != "EN"]
    drops = sorted((now[lang] - before[lang], lang) for lang in non_english if lang in before)
    below = [(d, lang) for d, lang in drops if d < -0.02]
    lines = [
        f"### Babel-ImageNet class names, {len(now)} languages, recall@10 ({mode})",
        "",
        "| | EN | mean of 92 non-English | languages > 2 points below babel-lite 2 | largest loss | largest gain |",
        "|---|---:|---:|---:|---|---|",
        f"| babel-lite 2 ({BEFORE_CLASSES.name}) | {before.get('EN', float('nan')):.3f} | "
        f"{sum(before[lang] for lang in non_english if lang in before) / len(non_english):.3f} | - | - | - |",
        f"| now | {now['EN']:.3f} | {sum(now[lang] for lang in non_english) / len(non_english):.3f} | {len(below)} "
        f"| {drops[0][1]} {drops[0][0]:+.3f} | {drops[-1][1]} {drops[-1][0]:+.3f} |",
    ]
    if below:
        lines.append("\nmore than 2 points below: " + ", ".join(f"{lang} {d:+.3f}" for d, lang in below))
    return lines + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="babel-lite")
    parser.add_argument("--modes", default="distance,none", help="rerank modes, side by side")
    parser.add_argument("--skip-classes", action="store_true", help="captions only (the class names take minutes)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for needed in (CAPTIONS / "test-flickr8k.tsv", CAPTIONS / "test-cc3m.tsv"):
        if not needed.exists():
            print(f"{needed} not found: this benchmark reads ../shared/data", file=sys.stderr)
            return 2
    WORK.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    out: list[str] = [f"model {args.model}, {os.cpu_count()} CPU cores\n"]
    figures = {}
    for name, truth in (("flickr8k", CAPTIONS / "test-flickr8k.tsv"), ("cc3m", CAPTIONS / "test-cc3m.tsv")):
        index_dir = fresh_index([truth], WORK / f"{name}-test", args.model)
        report = evaluate_pool(index_dir, truth, modes)
        out += caption_table(name, report, modes)
        figures[name] = report.to_json()
    if not args.skip_classes and BABEL.exists():
        index_dir = fresh_index([SAMPLE / "images"], WORK / "imagenet-sample", args.model)
        report = evaluate_pool(index_dir, SAMPLE / "labels.tsv", modes, labels=BABEL)
        for mode in modes:
            out += class_table(report, mode)
        figures["babel-imagenet"] = report.to_json()
    print("\n".join(out))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(figures, ensure_ascii=False, indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
