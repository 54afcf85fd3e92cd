"""Measure the near-duplicate threshold (engine.duplicates.DUPLICATE_THRESHOLD) on the shared sample.

Copies --photos photos of the shared ImageNet sample five ways (resized to 50%, JPEG quality 60, 5% cropped
off every edge, 8% brighter, all four at once), indexes the copies with the model (default babel-lite)
together with all 1000 originals, scores every pair of images, and prints the cosine of near-copy pairs
against the nearest distinct photo (one photo per ImageNet class: the nearest ones are photos of similar
classes, the hard negatives), precision and recall of pairs over a sweep of thresholds, and what
``duplicate_groups`` finds at the chosen one.

    .venv/bin/python scripts/duplicate_threshold.py [--photos 100] [--work DIR] [--model babel-lite]

One to two minutes on 2 cores (1500 images embedded); --work keeps the copies and the index for a rerun.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenet-sample"


def half(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.LANCZOS)


def crop5(image: Image.Image) -> Image.Image:
    dx, dy = round(image.width * 0.05), round(image.height * 0.05)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def brighter(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(1.08)


# name -> (transform, JPEG quality or None for PNG: each single change is measured alone)
VARIANTS: dict[str, tuple[Callable[[Image.Image], Image.Image], int | None]] = {
    "half": (half, None),
    "jpeg60": (lambda image: image, 60),
    "crop5": (crop5, None),
    "bright": (brighter, None),
    "all": (lambda image: brighter(half(crop5(image))), 60),
}


HIDDEN_AT_MOST = 0.01  # the choice: collapse is on by default, and a false fold hides a distinct photo


def thumbnail(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        image.draft("L", (64, 64))
        small = image.convert("L").resize((16, 16), Image.Resampling.BOX)
    pixels = np.asarray(small, np.float32).ravel()
    pixels -= pixels.mean()
    return pixels / (np.linalg.norm(pixels) + 1e-6)


def make_copies(photos: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for photo in photos:
        with Image.open(photo) as opened:
            image = opened.convert("RGB")
        for name, (transform, quality) in VARIANTS.items():
            target = folder / f"{photo.stem}__{name}.{'jpg' if quality else 'png'}"
            if not target.exists():
                copy = transform(image)
                if quality:
                    copy.save(target, quality=quality)
                else:
                    copy.save(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=100, help="photos copied (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="babel-lite")
    parser.add_argument("--work", type=Path, default=None, help="keep the copies and the index here")
    args = parser.parse_args()

    from babelsearch.engine import SearchEngine
    from babelsearch.engine.duplicates import DUPLICATE_NEIGHBOURS, DUPLICATE_THRESHOLD, duplicate_groups
    from babelsearch.indexer import build_index

    with open(SAMPLE / "labels.tsv", encoding="utf-8") as fh:
        names = {Path(row["file"]).stem: row["english_name"] for row in csv.DictReader(fh, delimiter="\t")}
    originals = sorted((SAMPLE / "images").glob("*.jpg"))
    rng = np.random.default_rng(args.seed)
    photos = [originals[i] for i in sorted(rng.choice(len(originals), args.photos, replace=False))]

    work = args.work or Path(tempfile.mkdtemp(prefix="duplicate-threshold-"))
    make_copies(photos, work / "copies")
    build_index([SAMPLE / "images", work / "copies"], work / "index", model=args.model, progress=False)
    engine = SearchEngine.open(work / "index")

    ids, vectors = zip(*engine._shards.iter_vectors())
    all_ids, matrix = np.concatenate(ids), np.concatenate(vectors)
    rows = {image_id: engine.get(int(image_id)) for image_id in all_ids.tolist()}
    stems = [Path(rows[i]["path"]).stem for i in all_ids.tolist()]
    source = np.array([stem.split("__")[0] for stem in stems])
    variant = np.array([stem.split("__")[1] if "__" in stem else "original" for stem in stems])
    n = len(all_ids)
    print(f"{args.model}: {n} images ({len(originals)} originals, {n - len(originals)} copies of {len(photos)})")

    cosines = matrix @ matrix.T
    upper = np.triu(np.ones((n, n), bool), 1)
    same = (source[:, None] == source[None, :]) & upper
    other = (source[:, None] != source[None, :]) & upper
    positives, negatives = cosines[same], cosines[other]

    def spread(values: np.ndarray) -> str:
        q = np.percentile(values, [0, 1, 5, 50, 95, 100])
        return "  ".join(f"{label} {value:.4f}" for label, value in zip(("min", "p1", "p5", "p50", "p95", "max"), q))

    print("\ncosine of original vs its copy")
    is_original = variant == "original"
    first_of = {s: i for i, s in enumerate(source.tolist()) if is_original[i]}

    def copy_cosines(name: str) -> np.ndarray:
        copies = np.flatnonzero(variant == name)
        return cosines[[first_of[s] for s in source[copies]], copies]

    for name in VARIANTS:
        print(f"  {name:>8}: {spread(copy_cosines(name))}")
    print(f"  {'any pair':>8}: {spread(positives)}  ({len(positives)} pairs of copies of one photo)")

    masked = np.where(source[:, None] == source[None, :], -np.inf, cosines)
    nearest = masked.max(axis=1)
    print("\ncosine of each original to its nearest distinct photo (another class)")
    print(f"  {'nearest':>8}: {spread(nearest[is_original])}")
    print(f"  all {len(negatives)} distinct pairs: {spread(negatives)}")
    print("  the ten hardest distinct pairs:")
    order = np.argsort(-np.where(other, cosines, -np.inf), axis=None)[:10]
    for flat in order:
        i, j = divmod(int(flat), n)
        print(f"    {cosines[i, j]:.4f}  {names[source[i]]} ({variant[i]})  ~  {names[source[j]]} ({variant[j]})")

    # k-NN on the stored vectors is how duplicate_groups finds candidates: how many copy pairs it can reach
    top = np.argsort(-cosines, axis=1, kind="stable")[:, 1 : DUPLICATE_NEIGHBOURS + 1]
    linked = np.zeros((n, n), bool)
    np.put_along_axis(linked, top, True, axis=1)
    linked |= linked.T
    reach = linked[same].mean()
    print(f"\npairs of copies within each other's {DUPLICATE_NEIGHBOURS} nearest neighbours: {reach:.3f}")

    originals_only = np.ix_(is_original, is_original)
    nearest_original = np.where(np.eye(int(is_original.sum()), dtype=bool), -np.inf, cosines[originals_only]).max(1)
    kinds = {name: copy_cosines(name) for name in VARIANTS}
    print("\npairs at cosine >= T: precision and recall of pairs (all pairs among a photo's 6 images), false pairs,")
    print("distinct photo pairs among them, share of the 1000 originals with another photo at >= T (collapse")
    print("could hide them), and recall of original vs copy by kind")
    header = "  ".join(f"{name:>6}" for name in VARIANTS)
    print(f"  {'T':>6}  {'prec':>6}  {'recall':>6}  {'F1':>6}  {'false':>6}  {'photos':>6}  {'hidden':>6}  {header}")
    chosen = None
    for t in (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995):
        tp, fp = int((positives >= t).sum()), int((negatives >= t).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / len(positives)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        i, j = np.nonzero(other & (cosines >= t))
        photo_pairs = len({tuple(sorted(pair)) for pair in zip(source[i], source[j])})
        hidden = float((nearest_original >= t).mean())
        by_kind = "  ".join(f"{(kinds[name] >= t).mean():>6.3f}" for name in VARIANTS)
        print(
            f"  {t:>6.3f}  {precision:>6.3f}  {recall:>6.3f}  {f1:>6.3f}  {fp:>6}  {photo_pairs:>6}  {hidden:>6.3f}  "
            f"{by_kind}"
        )
        if chosen is None and hidden <= HIDDEN_AT_MOST:
            chosen = t
    print(
        f"\nlowest T with at most {HIDDEN_AT_MOST:.0%} of distinct photos having another at >= T: {chosen}; "
        f"the engine's DUPLICATE_THRESHOLD is {DUPLICATE_THRESHOLD}"
    )

    # for comparison, a pixel signal the index does not store: a 16x16 grey thumbnail, mean removed, as
    # a unit vector (brightness, JPEG and size changes barely move it), checked on the k-NN candidates
    thumbs = np.stack([thumbnail(Path(rows[i]["path"])) for i in all_ids.tolist()])
    pixels = thumbs @ thumbs.T
    for cos_at_least, pixels_at_least in ((0.5, 0.8), (0.5, 0.85)):
        hit = linked & (cosines >= cos_at_least) & (pixels >= pixels_at_least) & upper
        tp, fp = int((hit & same).sum()), int((hit & other).sum())
        print(
            f"k-NN candidates at cosine >= {cos_at_least} whose thumbnails correlate >= {pixels_at_least}: "
            f"precision {tp / max(tp + fp, 1):.3f}, recall {tp / len(positives):.3f} ({fp} false pairs)"
        )

    groups = duplicate_groups(engine, DUPLICATE_THRESHOLD)
    by_id = dict(zip(all_ids.tolist(), source.tolist()))
    kind_of = dict(zip(all_ids.tolist(), variant.tolist()))
    group_of = {image_id: g for g, group in enumerate(groups) for image_id in group}
    together = np.array([group_of.get(int(a), -1) == group_of.get(int(b), -2) for a, b in zip(*np.nonzero(same))])
    mixed = [g for g in groups if len({by_id[i] for i in g}) > 1]
    print(
        f"\nduplicate_groups at {DUPLICATE_THRESHOLD}: {len(groups)} groups of {sum(map(len, groups))} images; "
        f"copy pairs in one group: {together.mean():.3f}; groups mixing distinct photos: {len(mixed)}"
    )
    for group in mixed[:10]:
        print("  mixed:", ", ".join(f"{names[by_id[i]]} ({kind_of[i]})" for i in group))


if __name__ == "__main__":
    main()
