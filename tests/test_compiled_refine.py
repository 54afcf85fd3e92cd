"""The refine's compiled kernel (engine/_refine.c): built by the install, and what it refuses. Its results,
on every shard layout and next to the numpy + faiss path, are tested in test_guard_shards.py."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from babelsearch.engine import scorer, shards

kernel = pytest.importorskip("babelsearch.engine._refine", reason="the install built no compiled refine")


def test_the_install_built_the_compiled_refine():
    # CI's machine is x86-64 with a C compiler: there the kernel must be built and in use, or every
    # search silently takes the slower path
    if platform.machine() not in {"x86_64", "AMD64"}:
        pytest.skip(f"the SIMD kernel is x86-64 only; this is {platform.machine()}")
    assert kernel.FAST and scorer.COMPILED_REFINE is kernel


def call(queries, ids, stores, keep):
    scores = np.empty((len(ids), keep), np.float32)
    out_ids = np.empty((len(ids), keep), np.int64)
    kernel.refine(queries, ids, stores, keep, scores, out_ids)
    return scores, out_ids


def store(ids, dim=4, dtype=np.float16):
    rows = np.arange(len(ids) * dim, dtype=np.float32).reshape(len(ids), dim) / 100
    return np.asarray(ids, np.int64), rows.astype(dtype)


def test_ties_keep_the_earlier_candidate_first():
    # duplicate photos have identical vectors: their order must be the candidates' (stable), as numpy's
    ids, _ = store(range(6))
    same = (ids, np.ones((6, 4), np.float16))
    scores, found = call(np.ones((1, 4), np.float32), np.array([[4, 1, 5, 0, 2]]), [same], 3)
    assert found.tolist() == [[4, 1, 5]] and scores.tolist() == [[4.0, 4.0, 4.0]]


@pytest.mark.parametrize(
    "stores,match",
    [
        ([store(range(3), dtype=np.float64)], "float16, or all float32"),
        ([store(range(3)), store(range(3, 6), dtype=np.float32)], "float16, or all float32"),
        ([(np.arange(3, dtype=np.int32), np.zeros((3, 4), np.float16))], "store ids: wrong element type"),
        ([(np.arange(3, dtype=np.int64), np.zeros((2, 4), np.float16))], "holds 16 bytes of vectors for 3 ids"),
        ([(np.arange(3, dtype=np.int64), np.zeros((3, 5), np.float16))], "holds 30 bytes of vectors for 3 ids"),
        ([np.arange(3)], "an \\(ids, vectors\\) tuple"),
    ],
)
def test_stores_that_do_not_fit_are_refused_not_read_past_their_end(stores, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call(np.ones((1, 4), np.float32), np.array([[0, 1, 2]]), stores, 2)


def test_result_arrays_of_the_wrong_size_or_type_are_refused():
    queries, ids, stores = np.ones((2, 4), np.float32), np.array([[0, 1], [1, 2]]), [store(range(3))]
    with pytest.raises(ValueError, match="must hold \\(nq, keep\\) results"):
        kernel.refine(queries, ids, stores, 2, np.empty((2, 1), np.float32), np.empty((2, 2), np.int64))
    with pytest.raises(TypeError, match="queries: wrong element type"):
        call(queries.astype(np.float64), ids, stores, 2)
    with pytest.raises(ValueError, match="queries must be \\(nq, dim\\) and ids \\(nq, n\\)"):
        call(queries, ids[:1], stores, 2)
    read_only = np.empty((2, 2), np.int64)
    read_only.setflags(write=False)
    with pytest.raises((BufferError, ValueError)):  # never written into
        kernel.refine(queries, ids, stores, 2, np.empty((2, 2), np.float32), read_only)
    with pytest.raises(ValueError, match="keep must be >= 0"):
        kernel.refine(queries, ids, stores, -1, np.empty(0, np.float32), np.empty(0, np.int64))


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("dim", [3, 8, 12, 16, 20, 33, 384])
def test_every_dimension_is_scored_to_its_last_element(dim: int, dtype):
    # the SIMD loop takes 16 and 8 elements at a time; the rest is scored one by one
    rng = np.random.default_rng(dim)
    rows = rng.standard_normal((50, dim)).astype(dtype)
    queries = rng.standard_normal((3, dim)).astype(np.float32)
    pool = np.stack([rng.permutation(50)[:20] for _ in queries])
    scores, found = call(queries, pool, [(np.arange(50, dtype=np.int64), rows)], 20)
    exact = np.einsum("qcd,qd->qc", rows.astype(np.float32)[pool], queries)
    order = np.argsort(-exact, axis=1, kind="stable")
    np.testing.assert_allclose(scores, np.take_along_axis(exact, order, axis=1), rtol=1e-5, atol=1e-4)
    assert (found == np.take_along_axis(pool, order, axis=1)).mean() > 0.95  # only near ties may swap


def test_a_large_batch_split_over_threads_gives_each_query_its_own_results(monkeypatch):
    # PARALLEL_REFINE_QUERIES or more queries are refined in slices on faiss' thread count: every
    # slice must land in its own rows, exactly as query-by-query
    import faiss

    rng = np.random.default_rng(2)
    dim, n = 16, 3000
    stores = [
        shards.RefineStore(ids, rng.standard_normal((len(ids), dim)).astype(np.float16))
        for ids in (np.arange(0, 1000, dtype=np.int64), np.arange(1000, n, 2, dtype=np.int64))
    ]
    shard_set = shards.ShardSet(dim, stores)
    queries = rng.standard_normal((scorer.PARALLEL_REFINE_QUERIES * 3 + 5, dim)).astype(np.float32)
    pool = rng.integers(0, n, (len(queries), 60))
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(3)  # more than one, whatever this machine has
    try:
        scores, found = shard_set.refine(queries, pool, keep=7)
    finally:
        faiss.omp_set_num_threads(threads)
    assert 3 in scorer._POOLS  # the split path ran
    for q in range(len(queries)):
        one_scores, one_found = shard_set.refine(queries[q : q + 1], pool[q : q + 1], keep=7)
        assert found[q].tolist() == one_found[0].tolist()
        np.testing.assert_array_equal(scores[q], one_scores[0])
