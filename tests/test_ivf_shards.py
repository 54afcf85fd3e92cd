"""IVF-PQ shards: recall against exact search, sharding + merge, refine, Flat fallback, incremental runs."""

import json
from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine import IncompatibleIndex, IndexBusy, InvalidQuery, InvalidSetting, SearchEngine
from babelsearch.engine.layout import read_manifest
from babelsearch.engine.shards import ShardSet
from babelsearch.indexer import IndexOptions, index_embeddings
from babelsearch.indexer.factory import choose_factory, nlist_for, pq_m_for
from babelsearch.indexer.writer import IndexWriter

from .conftest import clustered_vectors, exact_top_k, recall

IVF = "IVF32,PQ8"  # 4000 vectors: >= 39 per list; 8 codebooks of 4 dims


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """4000 clustered base vectors (saved as .npy) and 100 held-out queries."""
    x = clustered_vectors(4100, dim=32, seed=1)
    folder = tmp_path_factory.mktemp("vectors")
    np.save(folder / "base.npy", x[:4000])
    return folder / "base.npy", x[:4000], x[4000:]


@pytest.fixture(scope="module")
def ivf_index(vectors, tmp_path_factory) -> Path:
    """The 4000 vectors as IVF-PQ in four shards of at most 1000."""
    path, _, _ = vectors
    index_dir = tmp_path_factory.mktemp("ivf") / "index"
    index_embeddings(path, index_dir, options=IndexOptions(index_factory=IVF, shard_size=1000))
    return index_dir


def ids_of(hits) -> list[list[int]]:
    return [[h.id for h in row] for row in hits]


def test_ivf_pq_shards_layout_and_manifest(ivf_index: Path):
    manifest = read_manifest(ivf_index)
    assert manifest.factory == IVF and manifest.trained == "trained.faiss"
    assert (ivf_index / "trained.faiss").is_file() and manifest.refine_dtype == "float16"
    assert [s.count for s in manifest.shards] == [1000] * 4 and manifest.images == 4000
    for shard in manifest.shards:
        assert shard.file.startswith("shards/") and (ivf_index / shard.file).is_file()
        ids = np.load(ivf_index / shard.ids)
        assert (np.diff(ids) > 0).all()  # sorted: refine finds rows by binary search
        assert np.load(ivf_index / shard.vectors, mmap_mode="r").dtype == np.float16
    assert manifest.settings["nprobe"] >= 1 and manifest.settings["refine_factor"] > 1
    assert sorted(p.name for p in (ivf_index / "shards").iterdir()) == sorted(
        Path(name).name for s in manifest.shards for name in (s.file, s.ids, s.vectors)
    )


def test_recall_against_exact_search_with_and_without_refine(ivf_index: Path, vectors):
    _, base, queries = vectors
    truth = exact_top_k(base, queries, 10)
    engine = SearchEngine.open(ivf_index)
    refined = engine.search_vectors(queries, k=10, nprobe=8, refine_factor=10)
    plain = engine.search_vectors(queries, k=10, nprobe=8, refine_factor=1)
    assert recall(ids_of(refined), truth) >= 0.95
    assert recall(ids_of(plain), truth) < recall(ids_of(refined), truth)
    # refined scores are the exact inner products (float16 vectors: ~1e-3)
    for q, row in zip(queries[:10], refined[:10]):
        exact = base[[h.id for h in row]] @ q
        assert np.allclose([h.score for h in row], exact, atol=3e-3)
        assert all(a.score >= b.score for a, b in zip(row, row[1:]))
    # nprobe is per call: fewer lists probed, lower recall, and the default is the manifest's
    assert recall(ids_of(engine.search_vectors(queries, k=10, nprobe=1, refine_factor=10)), truth) < recall(
        ids_of(refined), truth
    )
    assert engine.default_nprobe == read_manifest(ivf_index).settings["nprobe"]


def test_sharded_and_unsharded_builds_return_the_same_results(ivf_index: Path, vectors, tmp_path: Path):
    path, _, queries = vectors
    index_embeddings(path, tmp_path / "one", options=IndexOptions(index_factory=IVF, shard_size=100_000))
    assert len(read_manifest(tmp_path / "one").shards) == 1
    sharded, single = SearchEngine.open(ivf_index), SearchEngine.open(tmp_path / "one")
    for params in ({"nprobe": 4, "refine_factor": 1}, {"nprobe": 4, "refine_factor": 8}):
        a = sharded.search_vectors(queries, k=10, **params)
        b = single.search_vectors(queries, k=10, **params)
        assert ids_of(a) == ids_of(b)
        assert np.allclose([[h.score for h in r] for r in a], [[h.score for h in r] for r in b])


def test_flat_fallback_below_the_trainable_size_is_exact(vectors, tmp_path: Path):
    path, base, queries = vectors
    report = index_embeddings(path, tmp_path / "flat", options=IndexOptions(shard_size=1500))
    manifest = read_manifest(tmp_path / "flat")
    assert report.factory == manifest.factory == "Flat" and manifest.trained is None
    assert [s.count for s in manifest.shards] == [1500, 1500, 1000]
    assert any("index factory: Flat" in note for note in report.notes)
    hits = SearchEngine.open(tmp_path / "flat").search_vectors(queries, k=10)
    assert ids_of(hits) == exact_top_k(base, queries, 10).tolist()  # several shards, merged exactly


def test_factory_rules():
    assert nlist_for(1_000_000) == 4096 and nlist_for(30_000) == 512 and nlist_for(1) == 4
    assert pq_m_for(384) == 32 and pq_m_for(512) == 32 and pq_m_for(4) == 4 and pq_m_for(97) is None
    assert choose_factory(19_000, 384) == "Flat"  # 19,000 < 39 * 512
    assert choose_factory(20_000, 384) == "IVF512,PQ32"
    assert choose_factory(1_000_000, 384) == "IVF4096,PQ32"
    assert choose_factory(1_000_000, 97) == "IVF4096,SQ8"


def test_stored_vectors_by_id_and_in_bulk_come_from_the_refine_files(ivf_index: Path, vectors):
    _, base, _ = vectors
    engine = SearchEngine.open(ivf_index)
    shards = ShardSet.open(engine.index_dir, engine.manifest)
    batches = list(shards.iter_vectors(batch_size=700))
    ids = np.concatenate([b[0] for b in batches])
    assert sorted(ids.tolist()) == list(range(4000)) and batches[0][1].dtype == np.float32
    assert np.allclose(np.concatenate([b[1] for b in batches]), base[ids], atol=1e-3)
    assert np.allclose(shards.vectors_for_ids([3999, 0, 1234]), base[[3999, 0, 1234]], atol=1e-3)
    with pytest.raises(KeyError):
        shards.vectors_for_ids([4000])


def test_rerun_adds_new_rows_replaces_changed_ones_and_does_not_retrain(vectors, tmp_path: Path):
    path, base, queries = vectors
    index_dir = tmp_path / "index"
    index_embeddings(path, index_dir, options=IndexOptions(index_factory=IVF, shard_size=1000))
    trained = read_manifest(index_dir).trained_sha256
    grown = np.concatenate([base, clustered_vectors(600, dim=32, seed=7)])
    grown[5] = clustered_vectors(1, dim=32, seed=8)[0]  # row 5 changed
    np.save(tmp_path / "grown.npy", grown)
    report = index_embeddings(tmp_path / "grown.npy", index_dir)
    assert (report.indexed, report.changed, report.unchanged) == (601, 1, 3999)
    manifest = read_manifest(index_dir)
    assert manifest.trained_sha256 == trained and manifest.factory == IVF  # not retrained
    assert manifest.images == 4600 and sum(s.count for s in manifest.shards) == 4600
    assert max(s.count for s in manifest.shards) <= 1000
    engine = SearchEngine.open(index_dir)
    hit = engine.search_vectors(grown[5], k=1, nprobe=32, refine_factor=10)[0][0]
    assert hit.id == 5 and hit.score == pytest.approx(1.0, abs=2e-3)
    truth = exact_top_k(grown, queries, 10)
    assert recall(ids_of(engine.search_vectors(queries, k=10, nprobe=8, refine_factor=10)), truth) >= 0.95
    # --retrain forces a new quantizer; ids and results survive it
    report = index_embeddings(tmp_path / "grown.npy", index_dir, options=IndexOptions(retrain=True))
    assert report.indexed == 0 and read_manifest(index_dir).trained_sha256 != trained
    engine = SearchEngine.open(index_dir)
    assert recall(ids_of(engine.search_vectors(queries, k=10, nprobe=8, refine_factor=10)), truth) >= 0.95


def test_metadata_gives_ids_and_paths(tmp_path: Path):
    x = clustered_vectors(50, dim=8, seed=3)
    np.save(tmp_path / "v.npy", x)
    ids = np.arange(1000, 1050)[::-1]
    (tmp_path / "meta.csv").write_text("path,id\n" + "".join(f"img/{i}.jpg,{i}\n" for i in ids))
    index_embeddings(tmp_path / "v.npy", tmp_path / "index", metadata=tmp_path / "meta.csv")
    engine = SearchEngine.open(tmp_path / "index")
    hit = engine.search_vectors(x[7], k=1)[0][0]
    assert (hit.id, hit.path) == (int(ids[7]), f"img/{ids[7]}.jpg")
    with pytest.raises(InvalidQuery, match="precomputed vectors"):
        engine.search("a text query needs a model")
    (tmp_path / "bad.csv").write_text("id\n1\n1\n")
    from babelsearch.engine import SourceError

    with pytest.raises(SourceError, match="rows"):
        index_embeddings(tmp_path / "v.npy", tmp_path / "index", metadata=tmp_path / "bad.csv")


def test_bad_settings_are_refused_clearly(vectors, tmp_path: Path):
    path, _, _ = vectors
    with pytest.raises(InvalidSetting, match="not a faiss factory string"):
        index_embeddings(path, tmp_path / "a", options=IndexOptions(index_factory="IVFbogus"))
    with pytest.raises(InvalidSetting, match="only 'Flat' and IVF factories"):
        index_embeddings(path, tmp_path / "b", options=IndexOptions(index_factory="HNSW32"))
    with pytest.raises(InvalidSetting, match="faiss sees no GPU"):
        index_embeddings(path, tmp_path / "c", options=IndexOptions(device="cuda"))
    assert not (tmp_path / "a" / "manifest.json").exists()


def test_search_parameters_are_checked(ivf_index: Path, vectors):
    engine = SearchEngine.open(ivf_index)
    for bad in ({"nprobe": 0}, {"refine_factor": 0}, {"refine_factor": 101}, {"nprobe": 2.5}):
        with pytest.raises(InvalidQuery, match="must be an integer"):
            engine.search_vectors(vectors[2][:1], k=10, **bad)
    with pytest.raises(InvalidQuery, match="dim"):
        engine.search_vectors(np.ones((1, 5), np.float32))


def test_a_second_writer_is_refused_while_one_runs(ivf_index: Path, vectors):
    writer = IndexWriter.open(ivf_index, model="precomputed", dim=32)
    try:
        with pytest.raises(IndexBusy, match=r"another `babelsearch index` run \(pid \d+\) is writing"):
            index_embeddings(vectors[0], ivf_index, options=IndexOptions(lock_wait=0))
    finally:
        writer.close()


def test_format_1_is_refused_for_search_and_upgraded_by_indexing(tmp_path: Path):
    import faiss

    from babelsearch.engine.catalog import ensure_schema, open_catalog

    x = clustered_vectors(30, dim=8, seed=5)
    index_dir = tmp_path / "old"
    (index_dir / "shards").mkdir(parents=True)
    old = faiss.IndexIDMap2(faiss.IndexFlatIP(8))
    old.add_with_ids(x, np.arange(100, 130))
    faiss.write_index(old, str(index_dir / "shards" / "00000.faiss"))
    db = open_catalog(index_dir)
    ensure_schema(db)
    db["images"].insert_all({"id": 100 + i, "path": f"p{i}.jpg"} for i in range(30))
    db.close()
    manifest = {
        "format": "babelsearch-index",
        "format_version": 1,
        "model": "precomputed",
        "dim": 8,
        "factory": "Flat",
        "shards": [{"file": "shards/00000.faiss", "count": 30}],
        "images": 30,
    }
    (index_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleIndex, match="upgrade it in place"):
        SearchEngine.open(index_dir)
    np.save(tmp_path / "none.npy", np.zeros((0, 8), np.float32))
    report = index_embeddings(tmp_path / "none.npy", index_dir)
    assert any("upgraded" in note for note in report.notes)
    engine = SearchEngine.open(index_dir)
    assert engine.manifest.format_version == 2 and not (index_dir / "shards" / "00000.faiss").exists()
    hit = engine.search_vectors(x[3], k=1)[0][0]
    assert (hit.id, hit.path) == (103, "p3.jpg") and hit.score == pytest.approx(1.0, abs=1e-5)


def test_images_train_mid_run_and_earlier_flat_shards_are_converted(colour_folder: Path, tmp_path: Path):
    from babelsearch.indexer import build_index

    from .conftest import COLOURS

    index_dir = tmp_path / "index"
    report = build_index(
        [colour_folder],
        index_dir,
        model="test-colours",
        batch_size=3,
        options=IndexOptions(index_factory="IVF2,Flat", shard_size=3),
    )
    manifest = read_manifest(index_dir)
    assert report.factory == manifest.factory == "IVF2,Flat" and [s.count for s in manifest.shards] == [3, 3, 2]
    engine = SearchEngine.open(index_dir)
    for colour in COLOURS:  # nprobe 2 of 2 lists: exact
        assert all(Path(h.path).name.startswith(colour) for h in engine.search(colour, k=2, nprobe=2))
    # a factory that cannot be trained on 8 vectors: the index stays exact Flat and says so
    report = build_index(
        [colour_folder], tmp_path / "small", model="test-colours", options=IndexOptions(index_factory="IVF64,Flat")
    )
    assert report.factory == "Flat" and any("kept Flat: IVF64,Flat needs at least 64" in n for n in report.notes)
    assert len(SearchEngine.open(tmp_path / "small").search("red", k=8)) == 8


@pytest.mark.slow
def test_auto_factory_goes_flat_to_ivf_and_retrains_once_outgrown(tmp_path: Path):
    x = clustered_vectors(100_000, dim=8, seed=21)
    for n in (19_000, 20_000, 79_000, 80_000):
        np.save(tmp_path / f"v{n}.npy", x[:n])
    index_dir = tmp_path / "index"
    assert index_embeddings(tmp_path / "v19000.npy", index_dir).factory == "Flat"
    report = index_embeddings(tmp_path / "v20000.npy", index_dir)
    assert report.factory == "IVF512,PQ8" and report.train_seconds > 0
    assert read_manifest(index_dir).trained_for == 20_000
    report = index_embeddings(tmp_path / "v79000.npy", index_dir)  # < 4x: no retraining
    assert report.factory == "IVF512,PQ8" and report.train_seconds == 0
    report = index_embeddings(tmp_path / "v80000.npy", index_dir)
    assert report.factory == "IVF1024,PQ8" and any("outgrown" in n for n in report.notes)
    engine = SearchEngine.open(index_dir)
    assert engine.count == 80_000 and engine.manifest.trained_for == 80_000
    queries = x[-50:]
    found = ids_of(engine.search_vectors(queries, k=10, nprobe=64, refine_factor=10))
    assert recall(found, exact_top_k(x[:80_000], queries, 10)) >= 0.95


def test_a_trained_index_lost_in_an_interrupted_retrain_is_recovered_from_a_shard(vectors, tmp_path: Path):
    path, base, queries = vectors
    index_dir = tmp_path / "index"
    index_embeddings(path, index_dir, options=IndexOptions(index_factory=IVF, shard_size=1000))
    original = read_manifest(index_dir).trained_sha256
    (index_dir / "trained.faiss").write_bytes(b"half a file")  # as if a retrain stopped mid-way
    np.save(tmp_path / "more.npy", np.concatenate([base, clustered_vectors(10, dim=32, seed=4)]))
    report = index_embeddings(tmp_path / "more.npy", index_dir)
    assert report.indexed == 10 and report.train_seconds == 0
    assert read_manifest(index_dir).trained_sha256 == original
    import hashlib

    assert hashlib.sha256((index_dir / "trained.faiss").read_bytes()).hexdigest() == original
    found = ids_of(SearchEngine.open(index_dir).search_vectors(queries, k=10, nprobe=8, refine_factor=10))
    assert recall(found, exact_top_k(np.load(tmp_path / "more.npy"), queries, 10)) >= 0.95


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_the_faiss_refine_scores_and_orders_as_the_numpy_one(tmp_path: Path, dtype: str):
    from babelsearch.engine.shards import RefineStore

    rng = np.random.default_rng(3)
    x = clustered_vectors(3000, dim=32, seed=5)
    ids = np.sort(rng.choice(100_000, 3000, replace=False)).astype(np.int64)
    stores = []
    for number, rows in enumerate((slice(0, 1000), slice(1000, 1800), slice(1800, 3000))):
        np.save(tmp_path / f"{number}.ids.npy", ids[rows])
        np.save(tmp_path / f"{number}.vectors.npy", x[rows].astype(dtype))
        stores.append(RefineStore.open(tmp_path / f"{number}.ids.npy", tmp_path / f"{number}.vectors.npy"))
    shards = ShardSet(32, stores)
    queries = clustered_vectors(40, dim=32, seed=6)
    candidates = ids[rng.integers(0, 3000, (40, 60))]
    candidates[:, -5:] = -1  # empty slots
    candidates[::3, :4] = 100_001 + np.arange(4)  # ids no shard holds
    scores, found = shards.refine(queries, candidates)
    want_scores, want_ids = shards._refine_numpy(queries, candidates)
    assert found.shape == candidates.shape and np.isneginf(scores[:, -5:]).all() and (found[:, -5:] == -1).all()
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    for row in scores:
        assert (np.diff(row[np.isfinite(row)]) <= 0).all()
    for row, want in zip(found, want_ids):  # equal sets, best first (ties may swap)
        assert set(row.tolist()) == set(want.tolist())
    rows = {int(i): k for k, i in enumerate(ids)}
    exact = np.array([x[rows[int(i)]] @ queries[0] for i in found[0] if i >= 0])
    np.testing.assert_allclose(scores[0][: len(exact)], exact, atol=2e-3 if dtype == "float16" else 1e-5)
