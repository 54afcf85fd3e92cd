"""Filtered search at scale: a selective and a broad folder filter against no filter (and a post-filter).

    python benchmarks/bench_filters.py [--n 1000000] [--workdir DIR --keep/--reuse]   (run by make bench-index)

The vectors are bench_index.py's generator (clustered, anisotropic); image i lives in folder i % 100,
so one folder is 1% of the collection. Each row: single-query p50/p99 ms, recall@10 against exact
search among the allowed images, and the mean hits returned (k = 10 wanted). The post-filter row is
what a search without filter support does (search k x 20 and drop the rest): it returns fewer than k
as the filter gets selective, which the engine never does while enough images match.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_index import latencies, load_line, make_data  # noqa: E402

FOLDERS = 100


def write_metadata(path: Path, n: int) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path"])
        writer.writerows([i, f"/photos/{i % FOLDERS:02d}/{i}.jpg"] for i in range(n))


def exact_truth(base: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int = 10) -> np.ndarray:
    import faiss

    from babelsearch.engine.ivf import id_selector

    flat = faiss.IndexFlatIP(base.shape[1])
    for start in range(0, len(base), 262144):
        flat.add(np.ascontiguousarray(base[start : start + 262144]))
    params = faiss.SearchParameters(sel=id_selector(allowed))
    return flat.search(queries, k, params=params)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the vectors and the index")
    parser.add_argument("--reuse", action="store_true", help="with --workdir: reuse what a --keep run left there")
    args = parser.parse_args()

    import faiss

    from babelsearch.engine import SearchEngine, Where
    from babelsearch.indexer import IndexOptions, index_embeddings

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-filters-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"# bench-filters: {args.n:,} x {args.dim}, {args.queries} queries, {FOLDERS} folders; "
        f"{os.cpu_count()} CPUs, faiss {faiss.__version__}; {load_line()}",
        flush=True,
    )
    try:
        saved = workdir / "filters-build.json"
        index_dir = workdir / "filters-index"
        if args.reuse and saved.exists():
            base_path, queries = workdir / "base.npy", np.load(workdir / "queries.npy")
            built = json.loads(saved.read_text())
        else:
            base_path, queries = make_data(workdir, args.n, args.dim, args.queries)
            np.save(workdir / "queries.npy", queries)
            write_metadata(workdir / "meta.csv", args.n)
            shutil.rmtree(index_dir, ignore_errors=True)
            started = time.perf_counter()
            index_embeddings(base_path, index_dir, workdir / "meta.csv", options=IndexOptions())
            built = {"seconds": time.perf_counter() - started}
            saved.write_text(json.dumps(built))
        print(f"build: {built['seconds']:.0f} s", flush=True)
        base = np.load(base_path, mmap_mode="r")
        engine = SearchEngine.open(index_dir)
        ids = np.arange(args.n)
        cases = [
            ("no filter", None, ids),
            ("selective: 1 folder (1%)", Where(folders=("/photos/07",)), ids[ids % FOLDERS == 7]),
            (
                "medium: 10 folders (10%)",
                Where(folders=tuple(f"/photos/{f:02d}" for f in range(10))),
                ids[ids % FOLDERS < 10],
            ),
            ("broad: all but 1 folder (99%)", Where(exclude_folders=("/photos/07",)), ids[ids % FOLDERS != 7]),
        ]
        print(
            "\n| filter | allowed | p50 ms | p99 ms | recall@10 | hits (k=10) | post-filter hits | post-filter recall@10 |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, where, allowed in cases:
            truth = exact_truth(base, queries, allowed)

            def search(q: np.ndarray, where=where):
                return engine.search_vectors(q, k=10, where=where, rerank="none")

            p50, p99 = latencies(search, queries)
            rows = search(queries)
            found = [[h.id for h in row] for row in rows]
            recall = np.mean([len(set(f) & set(t[t >= 0])) / 10 for f, t in zip(found, truth)])
            hits = np.mean([len(row) for row in rows])
            # a post-filter: 200 unfiltered hits, the allowed ones kept
            mask = np.zeros(args.n, bool)
            mask[allowed] = True
            post = [
                [h.id for h in row if mask[h.id]][:10] for row in engine.search_vectors(queries, k=200, rerank="none")
            ]
            post_recall = np.mean([len(set(f) & set(t[t >= 0])) / 10 for f, t in zip(post, truth)])
            post_hits = np.mean([len(row) for row in post])
            print(
                f"| {name} | {len(allowed):,} | {p50:.2f} | {p99:.2f} | {recall:.3f} | {hits:.1f} | "
                f"{post_hits:.1f} | {post_recall:.3f} |",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
