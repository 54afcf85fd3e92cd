"""Indexing images/s: single process vs Ray (a local Ray with 2 workers) on this machine; prints markdown.

    python benchmarks/bench_ray.py [--images DIR] [--limit N] [--cpus N] [--batch-size N]

Both builds index the same N photos (default: ../shared's 1000-photo ImageNet sample) with babel-lite
into fresh index directories. The single-process build runs with the encoder already loaded; the Ray
build runs on a Ray session started beforehand (its start is timed on its own row), so its wall time
holds what every Ray build pays: the actor pool starting and each actor loading the encoder, the
staged parts written and read back. Each is also run on one model batch of images; the difference
between the two sizes gives the cost per image without the fixed start-up costs, and the overhead per
image is Ray's minus the single process's. The two indexes are checked to hold the same ids and paths.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from babelsearch.engine.encoders import get_encoder  # noqa: E402
from babelsearch.indexer import build_index, collect_images  # noqa: E402

DEFAULT_IMAGES = ROOT.parent / "shared" / "data" / "imagenet-sample" / "images"


def timed_build(paths: list[Path], index_dir: Path, batch_size: int, ray: bool):
    listing = index_dir.parent / f"{index_dir.name}.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    started = time.perf_counter()
    report = build_index([listing], index_dir, model="babel-lite", batch_size=batch_size, ray=ray)
    return time.perf_counter() - started, report


def rows(index_dir: Path) -> list[tuple]:
    with sqlite3.connect(index_dir / "catalog.db") as db:
        return db.execute("select id, path from images order by id").fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray (its workers: one per CPU)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    paths = collect_images([args.images])[: args.limit]
    small = paths[: args.batch_size]
    n = len(paths)
    if n <= len(small):
        raise SystemExit(f"need more than {len(small)} images, {args.images} has {n}")
    import ray

    get_encoder("babel-lite").encode_images([])  # loaded once, before any timing
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        root = Path(tmp)
        local_small, _ = timed_build(small, root / "local-small", args.batch_size, ray=False)
        local_all, local_report = timed_build(paths, root / "local", args.batch_size, ray=False)
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        ray_start = time.perf_counter() - started
        try:
            ray_small, _ = timed_build(small, root / "ray-small", args.batch_size, ray=True)
            ray_all, ray_report = timed_build(paths, root / "ray", args.batch_size, ray=True)
        finally:
            ray.shutdown()
        same = rows(root / "ray") == rows(root / "local")

    marginal_local = (local_all - local_small) / (n - len(small))
    marginal_ray = (ray_all - ray_small) / (n - len(small))
    workers = ray_report.workers
    busy_rates = [images / seconds for images, seconds in workers.values() if seconds > 0]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{n} photos from {args.images}, babel-lite, batch {args.batch_size}, {os.cpu_count()} CPUs, ", end="")
    print(f"local Ray with {args.cpus} CPUs ({len(workers)} workers); load average {load:.1f} after the runs\n")
    print("| build | wall s | images/s | ms per image, start-up excluded | fixed start-up s |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| single process | {local_all:.1f} | {n / local_all:.1f} | {1000 * marginal_local:.1f} | "
        f"{local_small - marginal_local * len(small):.1f} |"
    )
    print(
        f"| Ray, {len(workers)} workers | {ray_all:.1f} | {n / ray_all:.1f} | {1000 * marginal_ray:.1f} | "
        f"{ray_small - marginal_ray * len(small):.1f} |"
    )
    print(f"| (starting the local Ray itself) | {ray_start:.1f} | | | |")
    print()
    rates = ", ".join(f"{r:.1f}" for r in sorted(busy_rates))
    print(f"- per Ray worker, images/s while busy (decode + embed + staging): {rates}")
    print(f"- overhead per image on Ray: {1000 * (marginal_ray - marginal_local):+.1f} ms")
    print(f"- same ids and paths as the single-process build: {'yes' if same else 'NO'}")
    print(f"- single process: {local_report.summary()}")
    print(f"- Ray: {ray_report.summary()}")


if __name__ == "__main__":
    main()
