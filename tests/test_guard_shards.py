"""What the shards promise (README, "Exact refine"): the approximate search over every shard proposes
candidates, and with refine_factor R the best k x R of them are re-scored exactly from the stored
vectors, so where k x R covers the collection the result is the exact top k; with R <= 1 no refine.
Stored vectors are found by id also in shards with gaps (removed images)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine import SearchEngine
from babelsearch.engine import scorer as scorer_module
from babelsearch.engine.errors import IndexDamaged
from babelsearch.engine.layout import read_manifest
from babelsearch.engine.shards import RefineStore, ShardSet
from babelsearch.indexer import IndexOptions, index_embeddings, tuning

from .conftest import clustered_vectors

N, DIM, NLIST = 1200, 32, 8
IVF = f"IVF{NLIST},PQ4"  # coarse codes: the approximate order is clearly not the exact one


@pytest.fixture(scope="module", autouse=True)
def one_faiss_thread() -> Iterator[None]:
    """faiss on one thread for this module: on a busy 2-core machine its OpenMP threads spin against
    each other (measured: 26 s to build the fixture with all threads, 4 s with one)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


@pytest.fixture(params=["compiled", "numpy+faiss"])
def refine_path(request, monkeypatch) -> str:
    """Each refine test on both paths: the compiled kernel (engine/_refine.c) and the numpy + faiss
    refine an install without a C compiler takes; they promise the same results."""
    if request.param == "compiled":
        if scorer_module.COMPILED_REFINE is None:
            pytest.skip("the compiled refine is not built here (see test_the_install_built_the_compiled_refine)")
    else:
        monkeypatch.setattr(scorer_module, "COMPILED_REFINE", None)
    return request.param


@pytest.fixture(scope="module")
def data(tmp_path_factory, one_faiss_thread) -> dict:
    x = clustered_vectors(N + 20, dim=DIM, seed=3)
    folder = tmp_path_factory.mktemp("guard-shards")
    np.save(folder / "base.npy", x[:N])
    out = {"base": x[:N], "queries": x[N:], "dirs": {"ivf": folder / "ivf", "flat": folder / "flat"}}
    with pytest.MonkeyPatch.context() as patch:
        # the search defaults' tuning is not what is tested here (tests/test_tuning.py): one grid point
        patch.setattr(tuning, "NPROBE_GRID", (NLIST,))
        patch.setattr(tuning, "REFINE_GRID", (2,))
        for name, factory in (("ivf", IVF), ("flat", "Flat")):
            options = IndexOptions(index_factory=factory, shard_size=500)
            index_embeddings(folder / "base.npy", folder / name, options=options)
    for name in ("ivf", "flat"):
        engine = SearchEngine.open(folder / name)
        out[name] = ShardSet.open(engine.index_dir, engine.manifest)
    return out


def stored_scores(shards: ShardSet, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Inner products with the stored vectors (float16 on disk), -inf for empty slots."""
    out = np.full(ids.shape, -np.inf)
    for q, row in enumerate(ids):
        real = row >= 0
        out[q, real] = shards.vectors_for_ids(row[real]) @ queries[q]
    return out


def test_the_shards_hold_every_vector(data):
    ivf, flat = data["ivf"], data["flat"]
    assert len(ivf.stores) == len(flat.stores) == 3 and ivf.ntotal == flat.ntotal == N
    assert ivf.nlist == NLIST and flat.nlist == 0
    np.testing.assert_allclose(ivf.vectors_for_ids([0, 499, 500, N - 1]), data["base"][[0, 499, 500, N - 1]], atol=2e-3)


@pytest.mark.parametrize("k,factor", [(10, 10), (4, 5), (2, 2), (3, 3), (1, 7), (5, 240)])
def test_refine_rescores_exactly_the_best_k_times_factor_candidates(data, refine_path, k: int, factor: int):
    ivf, queries = data["ivf"], data["queries"]
    scores, ids = ivf.search(queries, k, nprobe=NLIST, refine_factor=factor)
    assert scores.shape == ids.shape == (len(queries), k) and (ids >= 0).all()
    # the contract: the approximate top k x factor, re-scored from the stored vectors, best k kept
    pool = ivf.candidates(queries, k * factor, nprobe=NLIST)[1]
    exact = stored_scores(ivf, queries, pool)
    best = np.take_along_axis(pool, np.argsort(-exact, axis=1, kind="stable")[:, :k], axis=1)
    assert [set(r) for r in ids.tolist()] == [set(r) for r in best.tolist()]
    np.testing.assert_allclose(scores, stored_scores(ivf, queries, ids), atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_a_pool_covering_the_collection_gives_the_exact_top_k(data, refine_path):
    ivf, base, queries = data["ivf"], data["base"], data["queries"]
    k = 5
    _, ids = ivf.search(queries, k, nprobe=NLIST, refine_factor=N // k)
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :k]
    hits = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids.tolist(), truth.tolist())])
    assert hits >= 0.98  # float16 storage may swap a near tie, nothing more
    _, plain = ivf.search(queries, k, nprobe=NLIST, refine_factor=1)
    plain_hits = np.mean([len(set(a) & set(b)) / k for a, b in zip(plain.tolist(), truth.tolist())])
    assert plain_hits < hits  # the coarse codes alone miss some: refine is what makes it exact


@pytest.mark.parametrize("factor", [1, 0])
def test_refine_factor_one_or_less_is_the_plain_candidate_search(data, factor: int):
    ivf, queries = data["ivf"], data["queries"]
    scores, ids = ivf.search(queries, 6, nprobe=NLIST, refine_factor=factor)
    want_scores, want_ids = ivf.candidates(queries, 6, nprobe=NLIST)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    # approximate (PQ) scores, not the exact ones: no refine happened
    assert not np.allclose(scores, stored_scores(ivf, queries, ids), atol=1e-3)


def test_nprobe_is_how_many_lists_are_scanned(data):
    ivf, queries = data["ivf"], data["queries"]
    one = ivf.candidates(queries, 200, nprobe=1)[1]
    every = ivf.candidates(queries, 200, nprobe=NLIST)[1]
    # one list holds only part of the collection: fewer real candidates than asked for, some queries
    assert (every >= 0).all() and (one < 0).any()
    assert (one >= 0).sum() < (every >= 0).sum()
    scores = ivf.candidates(queries, 200, nprobe=1)[0]
    assert np.isneginf(scores[one < 0]).all() and np.isfinite(scores[one >= 0]).all()  # empty slots: -inf


def test_exact_shards_merge_into_one_exact_ranking(data):
    flat, base, queries = data["flat"], data["base"], data["queries"]
    scores, ids = flat.candidates(queries, 10)
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, truth)  # across the three shards
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ base.T, truth, axis=1), atol=1e-5)
    # asking for more than there is: every image once, then empty slots (-1, -inf)
    scores, ids = flat.candidates(queries[:2], N + 5)
    assert sorted(ids[0, :N].tolist()) == list(range(N))
    assert (ids[:, N:] == -1).all() and np.isneginf(scores[:, N:]).all()


def test_refine_leaves_empty_and_unknown_slots_last(data, refine_path):
    ivf, queries = data["ivf"], data["queries"][:2]
    pool = np.array([[5, -1, 7, N + 50], [-1, -1, 3, 4]])
    scores, ids = ivf.refine(queries, pool)
    assert sorted(ids[0, :2].tolist()) == [5, 7] and ids[0, 2:].tolist() == [-1, -1]
    assert sorted(ids[1, :2].tolist()) == [3, 4] and ids[1, 2:].tolist() == [-1, -1]
    assert np.isneginf(scores[:, 2:]).all() and np.isfinite(scores[:, :2]).all()
    np.testing.assert_allclose(scores[:, :2], stored_scores(ivf, queries, ids[:, :2]), atol=1e-4)


def test_stored_rows_are_found_by_id_in_a_shard_with_gaps():
    ids = np.array([2, 3, 5, 8, 13], np.int64)
    store = RefineStore(ids, np.arange(10, dtype=np.float16).reshape(5, 2))
    found, rows = store.locate(np.array([5, 1, 13, 8, 99, 2, 4], np.int64))
    assert found.tolist() == [True, False, True, True, False, True, False]
    assert rows.tolist() == [2, 4, 3, 0]
    assert store.rows(rows).tolist() == [[4, 5], [8, 9], [6, 7], [0, 1]] and store.rows(rows).dtype == np.float32
    # consecutive ids (no removals) take the offset shortcut; the answer is the same kind
    dense = RefineStore(np.arange(10, 15, dtype=np.int64), np.zeros((5, 2), np.float16))
    found, rows = dense.locate(np.array([9, 10, 14, 15, 12], np.int64))
    assert found.tolist() == [False, True, True, False, True] and rows.tolist() == [0, 4, 2]
    empty = RefineStore(np.zeros(0, np.int64), np.zeros((0, 2), np.float16))
    assert empty.locate(np.array([1], np.int64))[0].tolist() == [False]


@pytest.mark.parametrize("dtypes", [("float16", "float16"), ("float16", "float32")])
def test_refine_of_many_queries_and_candidates_is_exact_on_either_path(dtypes, refine_path):
    # 20 queries x 4096 candidates: more than one refine block (REFINE_ROWS rows each) of queries;
    # one dtype: faiss' kernels, mixed dtypes (shards written at different times): the numpy path
    rng = np.random.default_rng(5)
    dim, n = 8, 5000
    base = rng.standard_normal((n, dim)).astype(np.float32)
    halves = [np.arange(0, n, 2), np.arange(1, n, 2)]  # ids interleaved: every shard has gaps
    stores = [RefineStore(ids.astype(np.int64), base[ids].astype(dt)) for ids, dt in zip(halves, dtypes)]
    shards = ShardSet(dim, stores)
    queries = rng.standard_normal((20, dim)).astype(np.float32)
    pool = np.stack([rng.permutation(n)[:4096] for _ in queries])
    pool[:, -3:] = -1  # empty slots too
    scores, ids = shards.refine(queries, pool)
    stored = np.concatenate([s.vectors.astype(np.float32) for s in stores])[np.argsort(np.concatenate(halves))]
    for q in range(len(queries)):
        real = pool[q][pool[q] >= 0]
        exact = stored[real] @ queries[q]
        order = np.argsort(-exact, kind="stable")
        np.testing.assert_allclose(scores[q, : len(real)], exact[order], atol=1e-4)
        assert set(ids[q, :10].tolist()) == set(real[order[:10]].tolist())
        assert ids[q, len(real) :].tolist() == [-1, -1, -1] and np.isneginf(scores[q, len(real) :]).all()


def test_an_empty_index_gives_only_empty_slots():
    # an index whose images were all removed: every slot empty (id -1, score -inf), never an id 0
    empty = ShardSet(DIM, [], flat_indexes=[])
    queries = clustered_vectors(2, dim=DIM, seed=9)
    for refine_factor in (1, 5):
        scores, ids = empty.search(queries, 3, refine_factor=refine_factor)
        assert scores.shape == ids.shape == (2, 3)
        assert (ids == -1).all() and np.isneginf(scores).all(), refine_factor


def test_a_missing_shard_file_is_file_not_found_naming_it(data, tmp_path: Path):
    # the engine reads the manifest again on FileNotFoundError (a concurrent run replaced the shard)
    index_dir = tmp_path / "copy"
    shutil.copytree(data["dirs"]["flat"], index_dir)
    manifest = read_manifest(index_dir)
    (index_dir / manifest.shards[1].ids).unlink()
    with pytest.raises(FileNotFoundError, match=str(manifest.shards[1].ids)):
        ShardSet.open(index_dir, manifest)


@pytest.mark.parametrize("into,taken_from", [("flat", "ivf"), ("ivf", "flat")])
def test_a_shard_of_the_other_kind_is_reported_damaged(data, tmp_path: Path, into: str, taken_from: str):
    index_dir = tmp_path / "copy"
    shutil.copytree(data["dirs"][into], index_dir)
    manifest = read_manifest(index_dir)
    other = read_manifest(data["dirs"][taken_from])
    # same count and dim, other kind (IVF-PQ vs Flat): refused, never searched as if it fitted
    shutil.copyfile(data["dirs"][taken_from] / other.shards[0].file, index_dir / manifest.shards[0].file)
    with pytest.raises(IndexDamaged, match=f"is not a shard of a {manifest.factory} index"):
        ShardSet.open(index_dir, manifest)


@pytest.mark.parametrize("n", [3, 40])
def test_exact_among_ranks_only_the_allowed_ids(data, refine_path, n: int):
    flat = data["flat"]
    if not hasattr(flat, "exact_among"):  # added beside this test, by another change under way
        pytest.skip("ShardSet.exact_among is not in this tree")
    base, queries = data["base"], data["queries"][:4]
    allowed = np.array(sorted({3, 17, 250, 499, 500, 777, 1100, 1199} | set(range(600, 620))), np.int64)
    unknown = np.array([N + 5, N + 9], np.int64)  # no stored vector: left out
    scores, ids = flat.exact_among(queries, np.concatenate([allowed, unknown]), n)
    assert scores.shape == ids.shape == (len(queries), n)
    exact = queries @ base[allowed].T
    for q in range(len(queries)):
        order = np.argsort(-exact[q], kind="stable")[:n]
        real = min(n, len(allowed))
        assert ids[q, :real].tolist() == allowed[order].tolist()
        np.testing.assert_allclose(scores[q, :real], exact[q, order], atol=2e-3)
        assert (ids[q, real:] == -1).all() and np.isneginf(scores[q, real:]).all()  # padded as faiss pads
    # nothing allowed (a filter that matches no image): only empty slots
    scores, ids = flat.exact_among(queries, np.zeros(0, np.int64), n)
    assert ids.shape == (len(queries), n) and (ids == -1).all() and np.isneginf(scores).all()


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY", b"not a numpy file"])
@pytest.mark.parametrize("part", ["ids", "vectors"])
def test_an_unreadable_refine_file_is_reported_damaged(data, tmp_path: Path, part: str, content: bytes):
    # a truncated or empty file (a disk that filled up): IndexDamaged naming it, never a raw EOFError
    index_dir = tmp_path / "copy"
    shutil.copytree(data["dirs"]["ivf"], index_dir)
    manifest = read_manifest(index_dir)
    name = getattr(manifest.shards[2], part)
    (index_dir / name).write_bytes(content)
    with pytest.raises(IndexDamaged, match=f"{name}.*cannot be read"):
        ShardSet.open(index_dir, manifest)


@pytest.mark.parametrize("nq", [1, 5])
@pytest.mark.parametrize(
    "layout",
    ["one shard from id 7", "one shard with gaps", "two shards", "two shards, one with gaps", "shards out of order"],
)
def test_refine_keeps_the_best_k_exactly_on_every_shard_layout(layout: str, nq: int, refine_path):
    # the refine's paths: one shard of consecutive ids (rows by offset), gaps (binary search), several
    # shards gathered per batch; one query (gathered straight into the scorer) or several
    rng = np.random.default_rng(11)
    dim = 8
    ids = {
        "one shard from id 7": [np.arange(7, 307)],
        "one shard with gaps": [np.arange(0, 600, 2)],
        "two shards": [np.arange(0, 150), np.arange(150, 300)],
        "two shards, one with gaps": [np.arange(0, 150), np.arange(150, 450, 2)],
        "shards out of order": [np.arange(200, 300), np.arange(0, 100), np.arange(100, 200)],
    }[layout]
    vectors = {int(i): rng.standard_normal(dim).astype(np.float16) for part in ids for i in part}
    stores = [RefineStore(part.astype(np.int64), np.stack([vectors[int(i)] for i in part])) for part in ids]
    shards = ShardSet(dim, stores)
    known = np.concatenate(ids)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    pool = np.stack([rng.choice(known, 40, replace=False) for _ in range(nq)])
    scores, found = shards.refine(queries, pool, keep=3)
    assert scores.shape == found.shape == (nq, 3)
    full_scores, full_ids = shards.refine(queries, pool)
    for q in range(nq):
        exact = np.array([vectors[int(i)].astype(np.float32) @ queries[q] for i in pool[q]])
        order = np.argsort(-exact, kind="stable")
        assert found[q].tolist() == pool[q][order[:3]].tolist()
        np.testing.assert_allclose(scores[q], exact[order[:3]], atol=1e-4)
        assert full_ids[q].tolist() == pool[q][order].tolist()  # keep=None: every candidate, best first
    # a pool with empty slots and an id no shard holds: those are left out, never scored as zeros
    pool[:, -5:] = -1
    pool[:, 0] = 10_000
    scores, found = shards.refine(queries, pool, keep=38)
    for q in range(nq):
        real = pool[q][(pool[q] >= 0) & (pool[q] != 10_000)]
        assert sorted(found[q, : len(real)].tolist()) == sorted(real.tolist())
        assert (found[q, len(real) :] == -1).all() and np.isneginf(scores[q, len(real) :]).all()


def test_a_query_that_scores_nothing_gets_empty_slots_not_a_wrong_id(refine_path):
    # a NaN query: faiss' scan keeps no candidate; the slots it leaves must read as empty (-1, -inf),
    # never as the last candidate (index -1)
    stores = [RefineStore(np.arange(0, 50, dtype=np.int64), np.ones((50, 4), np.float16))]
    shards = ShardSet(4, stores)
    scores, found = shards.refine(np.full((1, 4), np.nan, np.float32), np.arange(10, 20)[None, :], keep=5)
    assert found[0].tolist() == [-1] * 5 and np.isneginf(scores[0]).all()


def test_an_empty_slot_in_a_one_shard_index_is_never_scored_as_its_first_row(refine_path):
    # the slot faiss leaves empty (-1) has no row: scored as row 0 it would outrank every candidate here
    vectors = np.eye(8, dtype=np.float16)
    shards = ShardSet(8, [RefineStore(np.arange(8, dtype=np.int64), vectors)])
    query = vectors[:1].astype(np.float32)  # row 0 itself
    scores, found = shards.refine(query, np.array([[5, -1, 7]]))
    assert sorted(found[0, :2].tolist()) == [5, 7] and found[0, 2] == -1 and np.isneginf(scores[0, 2])


def test_keep_zero_gives_no_slots_on_either_path(data, refine_path):
    scores, found = data["ivf"].refine(data["queries"][:3], np.array([[1, 2, 3]] * 3), keep=0)
    assert scores.shape == found.shape == (3, 0)


def test_an_index_of_more_than_256_dimensions_opens_and_finds_its_vectors(tmp_path: Path):
    # dims past the small integers Python caches: compared by value, never by identity
    x = clustered_vectors(40, dim=384, seed=5)
    np.save(tmp_path / "x.npy", x)
    index_embeddings(tmp_path / "x.npy", tmp_path / "index")
    engine = SearchEngine.open(tmp_path / "index")
    assert [row[0].id for row in engine.search_vectors(x[:5], k=1)] == [0, 1, 2, 3, 4]


def test_a_shard_faiss_cannot_read_is_named_with_faiss_own_reason(data, tmp_path: Path):
    copy = shutil.copytree(data["dirs"]["ivf"], tmp_path / "ivf")
    shard = read_manifest(copy).shards[0]
    (copy / shard.file).write_bytes(b"IxF2" + bytes(range(256)) * 4)
    with pytest.raises(IndexDamaged) as caught:
        SearchEngine.open(copy)
    reason = str(caught.value).partition("cannot be read as a faiss index (")[2]
    assert reason and not reason.startswith(("RuntimeError", "Error in")), str(caught.value)
