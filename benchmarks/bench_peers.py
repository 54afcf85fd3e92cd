"""babelsearch side by side with the peer libraries, on the same vectors and queries (make bench-peers).

    python benchmarks/bench_peers.py                   # 300,000 and 1,000,000 vectors (hours on 2 cores)
    python benchmarks/bench_peers.py --quick           # 50,000 vectors: checks that everything runs
    python benchmarks/bench_peers.py --n 300000 --datasets synthetic --systems babelsearch,hnswlib

Systems: babelsearch through its library with its defaults (``index_embeddings`` on a .npy, then
``SearchEngine.search_vectors``), plain faiss IVF-PQ + IndexRefineFlat with babelsearch's chosen
factory and settings (float32 refine vectors in RAM), exact faiss IndexFlatIP, hnswlib, usearch,
LanceDB and autofaiss. The peers are installed into their own virtual environment (``--peers-venv``,
created on first use; a peer that does not install is reported in the table) and each system runs
in fresh subprocesses: one builds and saves, another loads, searches and reports its memory.

Columns: build seconds; RAM bytes per vector = RssAnon the loading process gained, measured after
the queries (anonymous memory: files mapped from disk, such as babelsearch's float16 refine vectors,
are not counted; they are shown apart); recall@10 against exact search; p50/p99 milliseconds of
one query at a time; queries per second of one batch call.

Datasets: ``synthetic``, the clustered generator of bench_index.py, and ``real-noisy``, the babel-lite
vectors of the shared sample's 1,000 photos (embedded once, cached under data/) repeated with
noise drawn from their own spectrum. Both are printed next to the real vectors' statistics:
participation ratio of the spectrum, nearest-neighbour cosine and the gap between the 10th and 11th
neighbours (how hard it is to order the top ten). Then how babelsearch's cost grows with N.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
K = 10
PEER_PACKAGES = ["numpy", "faiss-cpu", "hnswlib", "usearch", "lancedb", "autofaiss"]
MODULES = {"faiss-cpu": "faiss"}
# autofaiss pins numpy < 2, and pyarrow >= 20 (LanceDB's and autofaiss' table format) refuses numpy < 2
PINS = ["pyarrow<20"]
SYSTEMS = ["babelsearch", "faiss-ivfpq-refine", "faiss-flat", "hnswlib", "usearch", "lancedb", "autofaiss"]
NEEDS = {"hnswlib": "hnswlib", "usearch": "usearch", "lancedb": "lancedb", "autofaiss": "autofaiss"}
HNSW_EF = (64, 128, 256)
USEARCH_EF = (64, 128, 256)
DEEP_NPROBE, DEEP_REFINE = 16, 50  # babelsearch's deeper per-call row (at least its defaults)
LANCE_SETTINGS = ((20, 10), (50, 50))  # (nprobes, refine_factor): LanceDB's usual, and a deep one
SAMPLE_IMAGES = ROOT.parent / "shared" / "data" / "imagenet-sample" / "images"


# -- the peers' environment ------------------------------------------------------------------------
def ensure_peers_venv(venv: Path) -> dict[str, str]:
    """Create the peers' venv if needed and install each package on its own; {package: error} of those
    that would not install (reported in the table, not hidden)."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} (the peers' own environment)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)

    def importable(package: str) -> subprocess.CompletedProcess:
        module = MODULES.get(package, package)
        return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, text=True)

    failed: dict[str, str] = {}
    missing = [p for p in PEER_PACKAGES if importable(p).returncode != 0]
    for package in missing + (PINS if missing else []):
        print(f"installing {package} into {venv}", flush=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", package], capture_output=True, text=True)
        if done.returncode != 0:
            failed[package] = (done.stderr.strip().splitlines() or ["pip failed"])[-1][:200]
    for package in PEER_PACKAGES:
        if package not in failed and (check := importable(package)).returncode != 0:
            failed[package] = "installed but does not import: " + (check.stderr.strip().splitlines() or ["?"])[-1][:160]
    return failed


def peer_versions(python: Path) -> str:
    code = (
        "import importlib.metadata as m\n"
        f"for p in {PEER_PACKAGES!r}:\n"
        "    try: print(p, m.version(p))\n"
        "    except Exception: print(p, 'missing')\n"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout
    return ", ".join(out.split("\n")[:-1])


# -- data ------------------------------------------------------------------------------------------
def real_vectors(cache: Path) -> np.ndarray:
    """babel-lite image vectors of the shared sample's photos, embedded once and cached."""
    if cache.exists():
        return np.load(cache)
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from babelsearch.engine.encoders import get_encoder

    paths = sorted(p for p in SAMPLE_IMAGES.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise SystemExit(f"no photos under {SAMPLE_IMAGES}: the real-vector statistics need the shared sample")
    print(f"embedding {len(paths)} photos of {SAMPLE_IMAGES} with babel-lite (once; cached in {cache})", flush=True)
    encoder = get_encoder("babel-lite")
    parts = []
    for start in range(0, len(paths), 32):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + 32]]
        parts.append(encoder.encode_images(images))
    vectors = np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def synthetic(n: int, dim: int) -> np.ndarray:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_index import clustered_embeddings

    return clustered_embeddings(n, dim, seed=0)


def real_noisy(real: np.ndarray, n: int, seed: int = 0, noise: float = 0.6) -> np.ndarray:
    """n vectors: the real ones repeated, each copy moved by Gaussian noise with the real vectors' own
    covariance (scaled by ``noise``), so copies of one photo form a tight cluster like near-duplicates."""
    rng = np.random.default_rng(seed)
    centred = real - real.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / len(real))
    scale = np.sqrt(np.clip(eigvals, 0, None)).astype(np.float32) * noise
    out = np.empty((n, real.shape[1]), np.float32)
    for start in range(0, n, 65536):
        m = min(65536, n - start)
        x = (
            real[rng.integers(0, len(real), m)]
            + (rng.standard_normal((m, real.shape[1])).astype(np.float32) * scale) @ eigvecs.T
        )
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def hardness(base: np.ndarray, queries: np.ndarray | None = None) -> dict[str, float]:
    """Participation ratio of the spectrum, mean nearest-neighbour cosine, mean 10th-11th neighbour gap
    (queries None: leave-one-out within base)."""
    sample = base[np.random.default_rng(0).choice(len(base), min(len(base), 50_000), replace=False)]
    centred = sample - sample.mean(axis=0)
    eig = np.linalg.eigvalsh(centred.T @ centred / len(sample))
    pr = float(eig.sum() ** 2 / (eig**2).sum())
    own = queries is None
    queries = base[: min(len(base), 500)] if own else queries[:500]
    best = np.full((len(queries), K + 2), -np.inf, np.float32)
    for start in range(0, len(base), 65536):
        scores = queries @ base[start : start + 65536].T
        if own:
            rows = np.arange(len(queries))
            inside = (rows >= start) & (rows < start + scores.shape[1])
            scores[rows[inside], rows[inside] - start] = -np.inf
        take = min(K + 1, scores.shape[1])
        top = -np.partition(-scores, take - 1, axis=1)[:, :take]
        best = -np.sort(-np.concatenate([best, top], axis=1), axis=1)[:, : K + 1]
    return {"pr": pr, "nn": float(best[:, 0].mean()), "gap": float((best[:, K - 1] - best[:, K]).mean())}


def write_dataset(folder: Path, vectors: np.ndarray, n: int, nq: int) -> None:
    """base.npy (n rows), queries.npy (nq held-out rows) and truth.npy (exact top-10 ids) in folder."""
    import faiss

    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "base.npy", vectors[:n])
    queries = np.ascontiguousarray(vectors[n : n + nq])
    np.save(folder / "queries.npy", queries)
    flat = faiss.IndexFlatIP(vectors.shape[1])
    for start in range(0, n, 262144):
        flat.add(np.ascontiguousarray(vectors[start : min(n, start + 262144)]))
    np.save(folder / "truth.npy", flat.search(queries, K)[1])


# -- the workers (run in subprocesses: babelsearch's venv, or the peers') ----------------------------
def _anon() -> tuple[int, int]:
    anon = file = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                anon = int(line.split()[1]) * 1024
            elif line.startswith("RssFile:"):
                file = int(line.split()[1]) * 1024
    return anon, file


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[:K].tolist()) & set(b.tolist())) / K for a, b in zip(ids, truth)]))


def _timed(one, batch, queries: np.ndarray, truth: np.ndarray, singles: int) -> dict:
    """recall (batch call), p50/p99 of single queries, batch q/s."""
    one(queries[0])
    started = time.perf_counter()
    ids = np.asarray(batch(queries))
    qps = len(queries) / (time.perf_counter() - started)
    times = []
    # single queries on one thread, as a server answering concurrent clients runs them (and OpenMP's
    # barriers on a shared machine would time the other processes, not the query)
    faiss = sys.modules.get("faiss")
    threads = faiss.omp_get_max_threads() if faiss else 0
    if faiss:
        faiss.omp_set_num_threads(1)
    for q in queries[:singles]:
        started = time.perf_counter()
        one(q)
        times.append((time.perf_counter() - started) * 1000)
    if faiss:
        faiss.omp_set_num_threads(threads)
    return {
        "recall": _recall(ids, truth),
        "p50": float(np.percentile(times, 50)),
        "p99": float(np.percentile(times, 99)),
        "qps": qps,
    }


def worker_build(system: str, folder: Path, out: Path, cfg: dict) -> dict:
    base = np.load(folder / "base.npy", mmap_mode="r")
    n, dim = base.shape
    started = time.perf_counter()
    info: dict = {}
    if system == "babelsearch":
        from babelsearch.indexer import IndexOptions, index_embeddings

        index_embeddings(folder / "base.npy", out, options=IndexOptions())
        from babelsearch.engine.layout import read_manifest

        manifest = read_manifest(out)
        info = {
            "factory": manifest.factory,
            "nprobe": manifest.settings.get("nprobe"),
            "refine_factor": manifest.settings.get("refine_factor"),
            "measured_recall": manifest.settings.get("measured_recall"),
            "note": manifest.settings.get("tuning_note", ""),
        }
    elif system == "faiss-ivfpq-refine":
        import faiss

        index = faiss.index_factory(dim, cfg["factory"], faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.cp.min_points_per_centroid = 1
        if hasattr(ivf, "pq"):  # as babelsearch trains it: polysemous training is for L2 codes, and slow
            ivf.pq.cp.min_points_per_centroid, ivf.do_polysemous_training = 1, False
        rows = np.sort(np.random.default_rng(0).choice(n, min(n, 39 * ivf.nlist), replace=False))
        index.train(np.ascontiguousarray(base[rows]))
        refined = faiss.IndexRefineFlat(index)
        for start in range(0, n, 65536):
            refined.add(np.ascontiguousarray(base[start : start + 65536]))
        faiss.write_index(refined, str(out))
    elif system == "faiss-flat":
        import faiss

        index = faiss.IndexFlatIP(dim)
        for start in range(0, n, 65536):
            index.add(np.ascontiguousarray(base[start : start + 65536]))
        faiss.write_index(index, str(out))
    elif system == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
        for start in range(0, n, 65536):
            index.add_items(np.ascontiguousarray(base[start : start + 65536]), np.arange(start, min(n, start + 65536)))
        index.save_index(str(out))
    elif system == "usearch":
        from usearch.index import Index

        index = Index(ndim=dim, metric="ip", dtype="f16", connectivity=16, expansion_add=128)
        for start in range(0, n, 65536):
            stop = min(n, start + 65536)
            index.add(np.arange(start, stop), np.ascontiguousarray(base[start:stop]))
        index.save(str(out))
    elif system == "lancedb":
        import lancedb
        import pyarrow as pa

        db = lancedb.connect(str(out))

        def batches():
            for start in range(0, n, 65536):
                stop = min(n, start + 65536)
                vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(base[start:stop]).ravel()), dim)
                yield pa.RecordBatch.from_arrays([pa.array(np.arange(start, stop)), vectors], ["id", "vector"])

        schema = pa.schema([("id", pa.int64()), ("vector", pa.list_(pa.float32(), dim))])
        table = db.create_table("v", data=pa.RecordBatchReader.from_batches(schema, batches()))
        partitions = 2 ** max(1, round(np.log2(np.sqrt(n))))
        table.create_index(metric="dot", num_partitions=partitions, num_sub_vectors=dim // 16)
        info = {"partitions": partitions, "sub_vectors": dim // 16}
    elif system == "autofaiss":
        import faiss
        from autofaiss import build_index

        if not hasattr(faiss.OPQMatrix, "_bench_shim"):
            # autofaiss 2.18 calls OPQMatrix(d=, M=), keywords faiss-cpu >= 1.9's bindings no longer take
            opq = faiss.OPQMatrix

            def positional(d: int = 0, M: int = 1, d2: int = -1):  # noqa: N803 (faiss' own name)
                return opq(d, M, d2)

            positional._bench_shim = True  # type: ignore[attr-defined]
            faiss.OPQMatrix = positional
        budget = max(8, int(n * 100 / 2**20))  # about babelsearch's RAM class: 100 bytes per vector
        out.mkdir(parents=True, exist_ok=True)
        emb = out / "emb"
        emb.mkdir(exist_ok=True)
        np.save(emb / "part.npy", np.asarray(base))
        _, infos = build_index(
            embeddings=str(emb),
            index_path=str(out / "knn.index"),
            index_infos_path=str(out / "infos.json"),
            metric_type="ip",
            max_index_memory_usage=f"{budget}MB",
            current_memory_available="2G",
            verbose=40,
        )
        shutil.rmtree(emb)
        info = {"budget_mb": budget, "index_key": (infos or {}).get("index_key", "?")}
    else:
        raise SystemExit(f"unknown system {system}")
    info["build_s"] = time.perf_counter() - started
    return info


def worker_query(system: str, folder: Path, out: Path, cfg: dict) -> list[dict]:
    queries = np.load(folder / "queries.npy")
    truth = np.load(folder / "truth.npy")
    n = len(np.load(folder / "base.npy", mmap_mode="r"))
    singles = len(queries)
    rows: list[dict] = []
    if system == "babelsearch":
        from babelsearch.engine import SearchEngine

        before = _anon()
        engine = SearchEngine.open(out)

        def ids_of(hits):
            return [[h.id for h in row] + [-1] * (K - len(row)) for row in hits]

        def measure(label: str):
            r = _timed(
                lambda q: engine.search_vectors(q[None, :], k=K),
                lambda qs: ids_of(engine.search_vectors(qs, k=K)),
                queries,
                truth,
                singles,
            )
            rows.append({"label": label, **r})

        nprobe, factor = engine.default_nprobe, engine.default_refine_factor
        measure(f"defaults, `search_vectors` ({engine.manifest.factory}, nprobe {nprobe}, x{factor})")
        # the index alone (no catalog rows, no near-duplicate folding): what the refine costs against faiss'
        shards = engine.shards

        def index_only(label: str, probes: int, refine: int) -> None:
            r = _timed(
                lambda q: shards.search(q[None, :], K, nprobe=probes, refine_factor=refine),
                lambda qs: shards.search(qs, K, nprobe=probes, refine_factor=refine)[1],
                queries,
                truth,
                singles,
            )
            rows.append({"label": label, **r})

        index_only("the same, index only (`ShardSet.search`, float16 refine memory-mapped)", nprobe, factor)
        # what a caller who wants more recall gets by asking per call (no rebuild): against the peers' deep rows
        deep_nprobe, deep_factor = max(nprobe, DEEP_NPROBE), max(factor, DEEP_REFINE)
        index_only(
            f"per-call `nprobe={deep_nprobe}, refine_factor={deep_factor}`, index only", deep_nprobe, deep_factor
        )
        after = _anon()
        for row in rows:
            row["ram"], row["mapped"] = (after[0] - before[0]) / n, max(0, after[1] - before[1]) / n
        rows += refine_side_by_side(shards, folder, queries, truth, nprobe, factor)
    elif system == "faiss-ivfpq-refine":
        import faiss

        before = _anon()
        index = faiss.read_index(str(out))
        params = faiss.IndexRefineSearchParameters(
            k_factor=cfg["refine_factor"], base_index_params=faiss.SearchParametersIVF(nprobe=cfg["nprobe"])
        )
        r = _timed(
            lambda q: index.search(q[None, :], K, params=params),
            lambda qs: index.search(qs, K, params=params)[1],
            queries,
            truth,
            singles,
        )
        rows.append(
            {"label": f"{cfg['factory']} + IndexRefineFlat, nprobe {cfg['nprobe']}, x{cfg['refine_factor']}", **r}
        )
    elif system == "faiss-flat":
        import faiss

        before = _anon()
        index = faiss.read_index(str(out))
        r = _timed(lambda q: index.search(q[None, :], K), lambda qs: index.search(qs, K)[1], queries, truth, 100)
        rows.append({"label": "IndexFlatIP (exact)", **r})
    elif system == "hnswlib":
        import hnswlib

        before = _anon()
        index = hnswlib.Index(space="ip", dim=queries.shape[1])
        index.load_index(str(out), max_elements=n)
        for ef in HNSW_EF:
            index.set_ef(ef)
            r = _timed(
                lambda q: index.knn_query(q, k=K), lambda qs: index.knn_query(qs, k=K)[0], queries, truth, singles
            )
            rows.append({"label": f"HNSW M16, ef {ef}", **r})
    elif system == "usearch":
        from usearch.index import Index

        before = _anon()
        index = Index.restore(str(out))
        for ef in USEARCH_EF:
            index.expansion_search = ef
            r = _timed(lambda q: index.search(q, K), lambda qs: index.search(qs, K).keys, queries, truth, singles)
            rows.append({"label": f"HNSW f16 M16, ef {ef}", **r})
    elif system == "lancedb":
        import lancedb

        before = _anon()
        table = lancedb.connect(str(out)).open_table("v")
        for nprobes, refine in LANCE_SETTINGS:

            def one(q, nprobes=nprobes, refine=refine):
                found = table.search(q).metric("dot").nprobes(nprobes).refine_factor(refine).limit(K)
                ids = found.select(["id"]).to_arrow()["id"].to_numpy()
                return np.concatenate([ids, np.full(K - len(ids), -1)])

            r = _timed(one, lambda qs, one=one: [one(q) for q in qs], queries, truth, singles)
            rows.append({"label": f"IVF_PQ, nprobes {nprobes}, refine x{refine}", **r})
    elif system == "autofaiss":
        import faiss

        before = _anon()
        index = faiss.read_index(str(out / "knn.index"))
        infos = json.loads((out / "infos.json").read_text()) if (out / "infos.json").exists() else {}
        r = _timed(lambda q: index.search(q[None, :], K), lambda qs: index.search(qs, K)[1], queries, truth, singles)
        rows.append({"label": f"{infos.get('index_key', '?')}, its own search parameters", **r})
    else:
        raise SystemExit(f"unknown system {system}")
    after = _anon()
    for row in rows:
        row.setdefault("ram", (after[0] - before[0]) / n)
        row.setdefault("mapped", max(0, after[1] - before[1]) / n)
    return rows


def refine_side_by_side(shards, folder: Path, queries: np.ndarray, truth: np.ndarray, nprobe, factor: int) -> list:
    """babelsearch's refine against faiss' IndexRefineFlat over the very same IVF-PQ index (so the same
    candidates, hence equal recall), single queries interleaved one by one so that the shared machine's
    noise falls on both alike: the refine's own cost, measured as a ratio. At each step the two run
    different queries, and take turns going first: run back to back on one query, the second would find
    the inverted lists (and, for babelsearch's own paths, the rows) the first left in the caches."""
    import faiss

    base = np.load(folder / "base.npy", mmap_mode="r")
    ivf = shards.ivf_index
    if ivf is None or not np.array_equal(np.concatenate([s.ids for s in shards.stores]), np.arange(len(base))):
        return []  # faiss' refine reads row i for label i: only where our ids are the rows of base.npy
    vectors = np.ascontiguousarray(base, dtype=np.float32)  # faiss' refine: float32 vectors in RAM
    theirs = faiss.IndexRefineFlat(ivf, faiss.swig_ptr(vectors))  # label i is row i: our ids here
    params = faiss.IndexRefineSearchParameters(
        k_factor=factor, base_index_params=faiss.SearchParametersIVF(nprobe=int(nprobe))
    )
    from babelsearch.engine import scorer as scorer_module

    compiled = scorer_module.COMPILED_REFINE

    def ours(q, kernel=compiled):
        scorer_module.COMPILED_REFINE = kernel
        return shards.search(q, K, nprobe=nprobe, refine_factor=factor)

    systems = {"ours": ours, "faiss": lambda q: theirs.search(q, K, params=params)}
    if compiled is not None:  # also the path an install without a C compiler takes
        systems["numpy+faiss"] = lambda q: ours(q, None)
    found = {name: np.asarray(search(queries)[1]) for name, search in systems.items()}
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times: dict[str, list[float]] = {name: [] for name in systems}
    names, nq = list(systems), len(queries)
    for _ in range(3):
        for i in range(nq):
            for turn in range(len(names)):
                name = names[(i + turn) % len(names)]
                q = (i + names.index(name) * (nq // len(names))) % nq
                started = time.perf_counter()
                systems[name](queries[q : q + 1])
                times[name].append((time.perf_counter() - started) * 1000)
    faiss.omp_set_num_threads(threads)
    scorer_module.COMPILED_REFINE = compiled
    p50 = {name: float(np.percentile(t, 50)) for name, t in times.items()}
    kind = "compiled" if compiled is not None else "numpy + faiss: no compiled refine in this install"
    labels = {
        "ours": f"refine side by side: ours (float16, mapped, {kind}), {p50['ours'] / p50['faiss']:.2f}x faiss' p50",
        "faiss": "refine side by side: faiss IndexRefineFlat on the same IVF-PQ (float32 in RAM)",
        "numpy+faiss": f"refine side by side: ours without the compiled kernel, {p50.get('numpy+faiss', 0) / p50['faiss']:.2f}x",
    }
    return [
        {
            "label": labels[name],
            "recall": _recall(found[name], truth),
            "p50": p50[name],
            "p99": float(np.percentile(times[name], 99)),
            "qps": None,
            "ram": None,
            "mapped": None,
            "build_s": None,
        }
        for name in systems
    ]


def worker_main(spec: str) -> None:
    job = json.loads(spec)
    folder, out = Path(job["folder"]), Path(job["out"])
    if job["phase"] == "build":
        result = worker_build(job["system"], folder, out, job.get("cfg", {}))
    else:
        result = worker_query(job["system"], folder, out, job.get("cfg", {}))
    print("RESULT " + json.dumps(result), flush=True)


# -- the driver ------------------------------------------------------------------------------------
def run_worker(python: Path, job: dict, timeout: float) -> tuple[object | None, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "benchmarks"))
    try:
        done = subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--worker", json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    for line in done.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            return json.loads(line[7:]), ""
    tail = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").splitlines()
    return None, tail[-1][:160]


def bench_system(system: str, python: Path, folder: Path, work: Path, cfg: dict, timeout: float) -> tuple[dict, list]:
    out = work / system
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    if out.exists():
        out.unlink()
    job = {"system": system, "folder": str(folder), "out": str(out), "cfg": cfg}
    built, error = run_worker(python, {**job, "phase": "build"}, timeout)
    if built is None:
        return {"error": f"build failed: {error}"}, []
    rows, error = run_worker(python, {**job, "phase": "query"}, timeout)
    if rows is None:
        return {**built, "error": f"search failed: {error}"}, []
    if out.is_dir():
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    else:
        size = out.stat().st_size
    built["disk"] = size
    return built, rows  # type: ignore[return-value]


def fmt_row(system: str, built: dict, row: dict | None, n: int) -> str:
    if row is None:
        return f"| {system} | {built.get('error', 'not run')} | | | | | | | |"

    def number(value, spec: str) -> str:
        return "" if value is None else format(value, spec)

    return (
        f"| {system} | {row['label']} | {number(row.get('build_s', built['build_s']), '.0f')} | {number(row['ram'], '.0f')} | "
        f"{number(row['mapped'], '.0f')} | {row['recall']:.3f} | {row['p50']:.2f} | {row['p99']:.2f} | "
        f"{number(row['qps'], ',.0f')} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", default="300000,1000000", help="collection sizes, comma-separated")
    parser.add_argument("--quick", action="store_true", help="50,000 vectors, 200 queries, growth at 25k/50k")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--datasets", default="synthetic,real-noisy")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument(
        "--growth", default="100000,300000,1000000", help="sizes of the cost-growth table ('' skips it)"
    )
    parser.add_argument("--peers-venv", type=Path, default=ROOT / "data" / "peers-venv")
    parser.add_argument("--workdir", type=Path, default=ROOT / "data" / "bench-peers")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per build or search step")
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker)
        return
    sizes = [50_000] if args.quick else [int(x) for x in args.n.split(",") if x]
    growth = [25_000, 50_000] if args.quick else [int(x) for x in args.growth.split(",") if x]
    nq = 200 if args.quick else args.queries
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")

    failed = ensure_peers_venv(args.peers_venv) if set(systems) - {"babelsearch"} else {}
    peers_python = args.peers_venv / "bin" / "python"
    print(f"# bench-peers: {os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"peers: {peer_versions(peers_python)}" + (f"; failed to install: {failed}" if failed else ""))
    args.workdir.mkdir(parents=True, exist_ok=True)

    real = real_vectors(ROOT / "data" / "peers-cache" / "babel-lite-imagenet-sample.npy")
    stats = [
        "| vectors | n | participation ratio | nearest-neighbour cosine | 10th-11th neighbour gap |",
        "|---|---:|---:|---:|---:|",
    ]

    def stat_row(name: str, n: int, h: dict) -> None:
        stats.append(f"| {name} | {n:,} | {h['pr']:.1f} | {h['nn']:.3f} | {h['gap']:.4f} |")
        print(stats[-1], flush=True)

    stat_row("real babel-lite, shared sample (leave-one-out)", len(real), hardness(real))
    makers = {"synthetic": lambda n: synthetic(n, args.dim), "real-noisy": lambda n: real_noisy(real, n)}
    datasets = [d for d in args.datasets.split(",") if d]
    for name in datasets:
        stat_row(f"{name} (leave-one-out)", 1000, hardness(makers[name](1000 + nq)[:1000]))

    tables: list[str] = []
    growth_rows: dict[int, str] = {}
    for name in datasets:
        # the full comparison first, then the sizes only the growth table needs (babelsearch alone)
        extra = sorted(set(growth) - set(sizes)) if name == "synthetic" else []
        for n in sorted(sizes) + extra:
            print(f"\n## {name}, {n:,} vectors: data", flush=True)
            vectors = makers[name](n + nq)
            folder = args.workdir / f"{name}-{n}"
            write_dataset(folder, vectors, n, nq)
            if n in sizes:
                stat_row(f"{name} (held-out queries)", n, hardness(vectors[:n], vectors[n:]))
            del vectors
            run = systems if n in sizes else ["babelsearch"]
            lines = [
                f"### {name}, {n:,} x {args.dim}, {nq} held-out queries, k=10",
                "",
                "| system | settings | build s | RAM B/vector | mapped B/vector | recall@10 | p50 ms | p99 ms | batch q/s |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            cfg: dict = {}
            for system in run:
                package = NEEDS.get(system, "faiss-cpu")
                if system != "babelsearch" and package in failed:
                    lines.append(f"| {system} | not installed: {failed[package]} | | | | | | | |")
                    continue
                if system == "faiss-ivfpq-refine" and not cfg:
                    lines.append(
                        f"| {system} | needs babelsearch's run first (its factory and settings) | | | | | | | |"
                    )
                    continue
                python = Path(sys.executable) if system == "babelsearch" else peers_python
                started = time.perf_counter()
                built, rows = bench_system(system, python, folder, args.workdir / "runs", cfg, args.timeout)
                if system == "babelsearch" and "factory" in built:
                    cfg = {k: built[k] for k in ("factory", "nprobe", "refine_factor")}
                    print(f"babelsearch: {built.get('note', '')}", flush=True)
                    if rows and name == "synthetic":  # the growth table is synthetic data's
                        row = rows[0]
                        growth_rows[n] = (
                            f"| {n:,} | {built['factory']}, nprobe {built['nprobe']}, x{built['refine_factor']} | "
                            f"{built['build_s']:.0f} | {row['ram']:.0f} | {built['disk'] / n:.0f} | "
                            f"{row['recall']:.3f} | {row['p50']:.2f} |"
                        )
                for row in rows or [None]:
                    lines.append(fmt_row(system, built, row, n))
                    print(lines[-1], flush=True)
                print(f"({system}: {time.perf_counter() - started:.0f} s)", flush=True)
            if n in sizes:
                tables.append("\n".join(lines))
            shutil.rmtree(args.workdir / "runs", ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)

    print("\n# results\n")
    print("RAM B/vector: RssAnon gained by a fresh process that loaded the index and ran the queries;")
    print(
        "mapped B/vector: file pages it touched (RssFile), e.g. babelsearch's memory-mapped lists and refine vectors.\n"
    )
    print("\n".join(stats))
    print()
    print("\n\n".join(tables))
    if growth_rows:
        print("\n### babelsearch's cost as N grows (synthetic data, defaults: the tuner's own choice)\n")
        print("| N | chosen | build s | RAM B/vector | disk B/vector | recall@10 | p50 ms |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        print("\n".join(growth_rows[n] for n in sorted(growth_rows)))
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
