"""Benchmark the sharded IVF-PQ index: build time, RAM per vector, recall@10, latency, throughput.

    python benchmarks/bench_index.py                    # 1,000,000 x 384, 1,000 queries (make bench-index)
    python benchmarks/bench_index.py --n 100000 --keep  # a quick run; --keep leaves the files in --workdir

The vectors are clustered like real embeddings, not uniform noise: a power-law spectrum in a
random basis (variance concentrated in few directions), a shared offset (all cosines > 0), Zipf-
sized topics and sub-topics inside them. The queries are held-out points of the same distribution.

Side by side, at the same nprobe: the engine (babelsearch's shards, with and without exact refine
from memory-mapped float16 vectors), plain faiss with the same factory string (one in-RAM index: the
engine's overhead), and exact Flat search (the brute-force ceiling). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# -- data ----------------------------------------------------------------------------------------
def clustered_embeddings(n: int, dim: int, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """n unit vectors from a two-level mixture with an anisotropic (power-law) spectrum."""
    rng = np.random.default_rng(seed)
    topics_n, subs_n = 2000, 20
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
    spectrum = (np.arange(1, dim + 1) ** -0.3).astype(np.float32)
    offset = rng.standard_normal(dim).astype(np.float32) * 1.2 * spectrum
    topics = rng.standard_normal((topics_n, dim)).astype(np.float32) * spectrum
    subs = rng.standard_normal((topics_n, subs_n, dim)).astype(np.float32) * spectrum * 0.6
    weights = np.minimum(rng.zipf(1.5, topics_n), 1000).astype(np.float64)
    weights /= weights.sum()
    out = np.empty((n, dim), np.float32) if out is None else out
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        t, u = rng.choice(topics_n, m, p=weights), rng.integers(0, subs_n, m)
        noise = rng.standard_normal((m, dim)).astype(np.float32) * spectrum * 0.45
        x = (offset + topics[t] + subs[t, u] + noise) @ basis.T
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def make_data(workdir: Path, n: int, dim: int, nq: int) -> tuple[Path, np.ndarray]:
    """base.npy (n rows, memory-mapped on disk) and nq held-out queries from the same distribution."""
    path = workdir / "base.npy"
    both = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n + nq, dim))
    clustered_embeddings(n + nq, dim, seed=0, out=both)
    queries = np.array(both[n:])
    base = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, 262144):
        base[start : start + 262144] = both[start : min(n, start + 262144)]
    base.flush()
    del base, both
    path.with_suffix(".tmp.npy").unlink()
    return path, queries


# -- measuring -----------------------------------------------------------------------------------
def latencies(search, queries: np.ndarray) -> tuple[float, float]:
    """p50 and p99 milliseconds of one query at a time."""
    search(queries[:5])  # warm up (page cache, lazy init)
    times = []
    for q in queries:
        started = time.perf_counter()
        search(q[None, :])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def throughput(search, queries: np.ndarray) -> float:
    """Queries per second for the whole batch in one call."""
    started = time.perf_counter()
    search(queries)
    return len(queries) / (time.perf_counter() - started)


def recall_at(ids: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k].tolist()) & set(b.tolist())) / k for a, b in zip(ids, truth)]))


def rss_anon_of(load: str) -> int:
    """Anonymous RSS (bytes) a fresh process adds by running ``load`` (memory maps excluded)."""
    code = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
def anon():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1]) * 1024
import faiss, numpy, sqlite_utils
from babelsearch.engine import SearchEngine
before = anon()
loaded = {load}
print(anon() - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def load_line() -> str:
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


# -- the benchmark -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nprobe", default="16,32,64,128")
    parser.add_argument("--refine-factors", default=None, help="e.g. 8,50 (default: 8 and the index's own)")
    parser.add_argument("--flat-queries", type=int, default=100, help="single queries timed on exact Flat")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the vectors and the index")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --workdir: reuse the vectors and engine index a --keep run left there",
    )
    args = parser.parse_args()

    import faiss

    from babelsearch.engine import SearchEngine
    from babelsearch.indexer import IndexOptions, index_embeddings
    from babelsearch.indexer.factory import train_points

    # the indexer's notes (factory chosen, training) as they happen, in line with this script's output
    notes = logging.StreamHandler(sys.stdout)
    notes.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("babelsearch").addHandler(notes)
    logging.getLogger("babelsearch").setLevel(logging.INFO)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-index-"))
    workdir.mkdir(parents=True, exist_ok=True)
    nprobes = [int(x) for x in args.nprobe.split(",")]
    print(
        f"# bench-index: {args.n:,} x {args.dim}, {args.queries} queries; {os.cpu_count()} CPUs, "
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; {load_line()}",
        flush=True,
    )
    try:
        saved = workdir / "build.json"
        reuse = args.reuse and saved.exists()
        started = time.perf_counter()
        if reuse:
            base_path, queries = workdir / "base.npy", np.load(workdir / "queries.npy")
        else:
            base_path, queries = make_data(workdir, args.n, args.dim, args.queries)
            np.save(workdir / "queries.npy", queries)
        print(f"data: {time.perf_counter() - started:.0f} s", flush=True)
        base = np.load(base_path, mmap_mode="r")

        # exact ground truth, and the brute-force ceiling's speed
        flat = faiss.IndexFlatIP(args.dim)
        for start in range(0, args.n, 262144):
            flat.add(np.ascontiguousarray(base[start : start + 262144]))
        truth = flat.search(queries, 10)[1]
        flat_search = lambda q: flat.search(q, 10)  # noqa: E731
        flat_p50, flat_p99 = latencies(flat_search, queries[: args.flat_queries])
        flat_qps = throughput(flat_search, queries)
        flat_ram = flat.ntotal * args.dim * 4
        flat = flat_search = None  # frees the exact index (the closure's cell) before the engine's build
        print(f"flat: p50 {flat_p50:.1f} ms", flush=True)

        # the engine: `babelsearch index --embeddings` as a library call
        index_dir = workdir / "index"
        if reuse:
            built = json.loads(saved.read_text())
        else:
            shutil.rmtree(index_dir, ignore_errors=True)
            started = time.perf_counter()
            report = index_embeddings(base_path, index_dir, options=IndexOptions())
            built = {"total": time.perf_counter() - started, "train": report.train_seconds, "add": report.add_seconds}
            saved.write_text(json.dumps(built))
        engine_build = built["total"]
        engine = SearchEngine.open(index_dir)
        factory = engine.manifest.factory
        refine_factors = (
            [int(x) for x in args.refine_factors.split(",")]
            if args.refine_factors
            else sorted({8, engine.default_refine_factor})
        )
        engine_ram = rss_anon_of(f"SearchEngine.open({str(index_dir)!r})")
        shards = engine.shards
        print(f"engine: {factory}, built in {engine_build:.0f} s", flush=True)

        # plain faiss, same factory string, same training sample size, one index in RAM
        plain = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(plain))
        ivf.cp.min_points_per_centroid = 1
        if hasattr(ivf, "pq"):
            ivf.pq.cp.min_points_per_centroid, ivf.do_polysemous_training = 1, False
        rows = np.sort(np.random.default_rng(0).choice(args.n, min(args.n, train_points(plain, "cpu")), replace=False))
        started = time.perf_counter()
        plain.train(np.ascontiguousarray(base[rows]))
        plain_train = time.perf_counter() - started
        started = time.perf_counter()
        for start in range(0, args.n, 65536):
            plain.add(np.ascontiguousarray(base[start : start + 65536]))
        plain_add = time.perf_counter() - started
        faiss.write_index(plain, str(workdir / "plain.faiss"))
        plain_ram = rss_anon_of(f"faiss.read_index({str(workdir / 'plain.faiss')!r})")
        # plain faiss' own exact refine (IndexRefineFlat: float32 vectors in RAM) for the refine rows
        plain_refined = faiss.IndexRefineFlat(plain, faiss.swig_ptr(base.view(np.ndarray)))  # copies them

        table = [
            "| nprobe | search | recall@10 | p50 ms | p99 ms | batch q/s | p50 vs the plain faiss row alike |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for nprobe in nprobes:
            params = faiss.SearchParametersIVF(nprobe=nprobe)
            # (name, search, key of this row's p50, key of the row it is compared with)
            runs = [
                ("plain faiss", lambda q, p=params: plain.search(q, 10, params=p)[1], "plain", None),
                ("engine, no refine", lambda q, n=nprobe: shards.search(q, 10, nprobe=n)[1], None, "plain"),
            ]
            for rf in refine_factors:
                rparams = faiss.IndexRefineSearchParameters(k_factor=rf, base_index_params=params)
                runs += [
                    (
                        f"plain faiss + IndexRefineFlat x{rf} (float32 in RAM)",
                        lambda q, p=rparams: plain_refined.search(q, 10, params=p)[1],
                        f"refine{rf}",
                        None,
                    ),
                    (
                        f"engine, refine x{rf} (float16 memory-mapped)",
                        lambda q, n=nprobe, r=rf: shards.search(q, 10, nprobe=n, refine_factor=r)[1],
                        None,
                        f"refine{rf}",
                    ),
                ]
            rf = refine_factors[-1]
            runs.append(
                (
                    f"engine + catalog rows (`search_vectors`), refine x{rf}",
                    lambda q, n=nprobe, r=rf: engine.search_vectors(q, k=10, nprobe=n, refine_factor=r),
                    None,
                    f"refine{rf}",
                )
            )
            p50_of = {}
            for name, search, key, versus in runs:
                result = search(queries)
                ids = result if isinstance(result, np.ndarray) else np.array([[h.id for h in r] for r in result])
                p50, p99 = latencies(search, queries)
                qps = throughput(search, queries)
                if key:
                    p50_of[key] = p50
                ratio = f"{p50 / p50_of[versus]:.2f}x" if versus else ""
                table.append(
                    f"| {nprobe} | {name} | {recall_at(ids, truth):.3f} | {p50:.2f} | {p99:.2f} | {qps:,.0f} | "
                    f"{ratio} |"
                )
                print(table[-1], flush=True)
        table.append(f"| - | exact Flat (brute force) | 1.000 | {flat_p50:.2f} | {flat_p99:.2f} | {flat_qps:,.0f} | |")

        build = [
            "| build | train s | add s | total s | RAM bytes/vector |",
            "|---|---:|---:|---:|---:|",
            f"| engine (`index --embeddings`, {factory}, {len(engine.manifest.shards)} shards) | "
            f"{built['train']:.0f} | {built['add']:.0f} | {engine_build:.0f} | "
            f"{engine_ram / args.n:.1f} (measured RssAnon) |",
            f"| plain faiss ({factory}, one index) | {plain_train:.0f} | {plain_add:.0f} | "
            f"{plain_train + plain_add:.0f} | {plain_ram / args.n:.1f} (measured RssAnon) |",
            f"| exact Flat | - | - | - | {flat_ram / args.n:.0f} |",
        ]
        refine_bytes = sum(
            (index_dir / s.vectors).stat().st_size + (index_dir / s.ids).stat().st_size for s in engine.manifest.shards
        )
        print()
        print(
            f"{args.n:,} vectors x {args.dim}, {args.queries} held-out queries, k=10; "
            f"{os.cpu_count()} CPUs; {load_line()} at the end"
        )
        print()
        print("\n".join(build))
        print()
        print("\n".join(table))
        print()
        print(f"refine files on disk (memory-mapped, not counted above): {refine_bytes / args.n:.0f} bytes/vector")
        print(
            json.dumps(
                {
                    "factory": factory,
                    "nlist": shards.nlist,
                    "default_nprobe": engine.default_nprobe,
                    "refine_factors": refine_factors,
                    "engine_build_s": round(engine_build, 1),
                }
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
