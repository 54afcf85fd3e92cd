"""``python -m babelsearch.training``: train babel-lite's caption heads and write the model file.

python -m babelsearch.training ../shared/data/captions             # writes engine/resources/...
python -m babelsearch.training ../shared/data/captions --validate 1000 --out /tmp/try.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from .heads import HeadSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m babelsearch.training", description=__doc__.splitlines()[0])
    parser.add_argument("captions", type=Path, help="caption folder: captions.tsv and images/ (train split only)")
    parser.add_argument("--out", type=Path, default=None, help="model file to write (default: the package's own)")
    parser.add_argument("--work", type=Path, default=Path("data/train-cache"), help="cache of tower outputs")
    parser.add_argument("--validate", type=int, default=0, metavar="N", help="hold out N photos per source")
    parser.add_argument("--epochs", type=int, default=HeadSettings.epochs)
    parser.add_argument("--seed", type=int, default=HeadSettings.seed)
    parser.add_argument("--max-photos", type=int, default=None, help="train on the first N photos only")
    parser.add_argument(
        "--without", default="", help="comma-separated languages left out of training (to measure zero-shot ones)"
    )
    args = parser.parse_args(argv)

    from babelsearch.engine.errors import BabelsearchError

    from .recipe import Recipe, default_output, train_model
    from .validation import validation_report

    started = time.perf_counter()
    recipe = Recipe(
        captions=args.captions,
        work=args.work,
        heads=replace(HeadSettings(), epochs=args.epochs, seed=args.seed),
        validation_per_source=args.validate,
        max_photos=args.max_photos,
        without=tuple(code.strip() for code in args.without.split(",") if code.strip()),
    )
    try:
        result = train_model(recipe, say=lambda line: print(line, flush=True))
    except BabelsearchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    out = args.out or default_output()
    result.space.save(out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s: {result.summary}")
    if result.validation is not None and result.validation_outputs is not None:
        print(validation_report(result.space, result.validation, result.validation_outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
