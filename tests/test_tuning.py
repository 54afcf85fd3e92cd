"""The self-tuning index: search defaults that meet a target, one that cannot be met and says so,
per-call overrides, and the PQ code size chosen at training time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine import SearchEngine
from babelsearch.engine.layout import read_manifest
from babelsearch.engine.shards import ShardSet
from babelsearch.indexer import IndexOptions, index_embeddings, tuning
from babelsearch.indexer.factory import pq_m_ladder, same_layout, with_code
from babelsearch.indexer.tuning import choose_code_size, tune

from .conftest import clustered_vectors, exact_top_k, recall

FACTORY = "IVF64,PQ4"  # 4-byte codes: PQ alone orders near neighbours poorly, so refine matters


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    x = clustered_vectors(12_200, dim=32, seed=11)
    folder = tmp_path_factory.mktemp("tuning")
    np.save(folder / "base.npy", x[:12_000])
    return folder / "base.npy", x[:12_000], x[12_000:]


@pytest.fixture(scope="module")
def tuned(data, tmp_path_factory) -> Path:
    path, _, _ = data
    index_dir = tmp_path_factory.mktemp("tuned") / "index"
    report = index_embeddings(path, index_dir, options=IndexOptions(index_factory=FACTORY, target_recall=0.9))
    assert any("tuned in" in note and ">= target 0.90" in note for note in report.notes)
    return index_dir


def ids_of(hits) -> list[list[int]]:
    return [[h.id for h in row] for row in hits]


def test_a_reachable_target_is_met_and_recorded(tuned: Path, data):
    _, base, queries = data
    settings = read_manifest(tuned).settings
    assert settings["target_recall"] == 0.9 and settings["measured_recall"] >= 0.9
    assert "not met" not in settings["tuning_note"]
    engine = SearchEngine.open(tuned)
    assert engine.default_nprobe == settings["nprobe"] and engine.default_refine_factor == settings["refine_factor"]
    # held-out queries, searched with the tuned defaults, land near the measured recall
    found = ids_of(engine.search_vectors(queries, k=10))
    assert recall(found, exact_top_k(base, queries, 10)) >= 0.85


def test_per_call_settings_override_the_tuned_ones(tuned: Path, data):
    _, base, queries = data
    engine = SearchEngine.open(tuned)
    truth = exact_top_k(base, queries, 10)
    tuned_recall = recall(ids_of(engine.search_vectors(queries, k=10)), truth)
    cheap = recall(ids_of(engine.search_vectors(queries, k=10, nprobe=1, refine_factor=1)), truth)
    assert cheap < tuned_recall - 0.2


def test_the_cheapest_setting_meeting_the_target_is_chosen(tuned: Path):
    shards = ShardSet.open(tuned, read_manifest(tuned))
    loose = tune(shards, target_recall=0.5, nprobes=(2, 8, 32), refine_factors=(2, 10, 30))
    strict = tune(shards, target_recall=0.9, nprobes=(2, 8, 32), refine_factors=(2, 10, 30))
    assert loose.met and strict.met and loose.measured_recall >= 0.5
    assert (loose.nprobe, loose.refine_factor) <= (strict.nprobe, strict.refine_factor)
    assert loose.nprobe * 1000 + loose.refine_factor < strict.nprobe * 1000 + strict.refine_factor


def test_a_target_beyond_the_largest_settings_says_so(tuned: Path):
    shards = ShardSet.open(tuned, read_manifest(tuned))
    result = tune(shards, target_recall=0.999, nprobes=(1, 2), refine_factors=(1, 2))
    assert not result.met and result.measured_recall < 0.999
    assert (result.nprobe, result.refine_factor) in {(1, 1), (1, 2), (2, 1), (2, 2)}
    assert "not met" in result.note and "best measured" in result.note and "nprobe 2, refine x2" in result.note


def test_an_unreachable_target_from_an_index_run_is_recorded_and_shown(data, tmp_path: Path, monkeypatch):
    from click.testing import CliRunner

    from babelsearch.cli import cli

    path, _, _ = data
    # the largest settings the run may try: one list, no refine; 4-byte codes cannot order ten of 12,000
    monkeypatch.setattr(tuning, "NPROBE_GRID", (1,))
    monkeypatch.setattr(tuning, "REFINE_GRID", (1,))
    index_dir = tmp_path / "index"
    index_embeddings(path, index_dir, options=IndexOptions(index_factory=FACTORY, target_recall=0.99))
    settings = read_manifest(index_dir).settings
    assert settings["measured_recall"] < 0.99 and (settings["nprobe"], settings["refine_factor"]) == (1, 1)
    assert "target recall@10 0.99 not met" in settings["tuning_note"]
    out = CliRunner().invoke(cli, ["info", str(index_dir)]).output
    assert "not met" in out and "0.99" in out


def test_a_latency_target_takes_the_best_recall_within_it(tuned: Path):
    shards = ShardSet.open(tuned, read_manifest(tuned))
    grid = {"nprobes": (2, 16), "refine_factors": (2, 20)}
    generous = tune(shards, target_recall=None, target_latency_ms=1000.0, **grid)
    assert generous.met and generous.p50_ms is not None and generous.p50_ms <= 1000
    impossible = tune(shards, target_recall=None, target_latency_ms=1e-6, **grid)
    assert not impossible.met and "not met" in impossible.note


def test_info_shows_the_tuned_values(tuned: Path):
    from click.testing import CliRunner

    from babelsearch.cli import cli

    out = CliRunner().invoke(cli, ["info", str(tuned)]).output
    assert "measured_recall" in out and "target_recall" in out and "tuning" in out


# -- the code size, chosen at training time -----------------------------------------------------------
def _train(index, vectors):
    index.train(np.ascontiguousarray(vectors))
    return index


@pytest.fixture(scope="module")
def sample() -> np.ndarray:
    return clustered_vectors(6_000, dim=32, seed=5)


def test_the_smallest_code_meeting_the_target_is_kept(sample):
    easy = choose_code_size("IVF16,PQ2", sample, len(sample), 0.5, _train, ladder=[2, 4, 8, 16])
    assert easy.met and easy.factory == "IVF16,PQ2" and list(easy.pools) == [2]  # no larger code trained
    assert "code size PQ2: the smallest" in easy.note
    # five times the vectors: five times the points in front of a true neighbour; PQ2 then needs a pool
    # of about x120 for recall 0.99 (measured x23 at 6,000), PQ4 about x30
    strict = choose_code_size("IVF16,PQ2", sample, 5 * len(sample), 0.99, _train, ladder=[2, 4, 8, 16])
    assert strict.met and strict.factory == "IVF16,PQ4" and list(strict.pools) == [2, 4]
    assert strict.pools[4] <= tuning.CODE_POOL_BUDGET < strict.pools[2]
    assert strict.index.is_trained and strict.index.pq.M == 4
    assert "code size PQ4: the smallest" in strict.note and "PQ2 x" in strict.note


def test_a_code_size_no_code_reaches_says_so_and_takes_the_largest(sample):
    # a billion vectors: the pool a true neighbour sits in grows with density past any refine depth
    choice = choose_code_size("IVF16,PQ2", sample, 10**9, 0.99, _train, ladder=[2, 4])
    assert not choice.met and choice.factory == "IVF16,PQ4" and set(choice.pools) == {2, 4}
    assert "the largest tried: no code reaches recall@10 0.99" in choice.note


def test_realistic_queries_are_measured_too(sample):
    far = clustered_vectors(300, dim=32, seed=99)  # other "texts": farther from the images than their own points
    choice = choose_code_size("IVF16,PQ2", sample, len(sample), 0.5, _train, text_queries=far, ladder=[2, 4])
    assert "held-out vectors and query-bank texts" in choice.note


def test_code_ladder_and_layout():
    assert pq_m_ladder(384) == [32, 48, 64, 96]
    assert pq_m_ladder(64) == [32, 64]
    assert with_code("IVF2048,PQ32", 64) == "IVF2048,PQ64"
    # an automatic factory (PQ32) is the index's layout whatever code the trainer measured for it
    assert same_layout("IVF2048,PQ32", "IVF2048,PQ64") and not same_layout("IVF4096,PQ32", "IVF2048,PQ64")


@pytest.mark.slow  # 21,000 vectors: the fewest an automatic IVF factory trains on
def test_an_automatic_index_records_its_code_size_and_info_shows_it(tmp_path: Path):
    from click.testing import CliRunner

    from babelsearch.cli import cli

    x = clustered_vectors(21_000, dim=64, seed=3)
    np.save(tmp_path / "base.npy", x)
    index_dir = tmp_path / "index"
    report = index_embeddings(tmp_path / "base.npy", index_dir, options=IndexOptions(target_recall=0.5))
    manifest = read_manifest(index_dir)
    assert manifest.factory == "IVF512,PQ32"  # an easy target: the smallest code
    assert manifest.settings["code_size_note"].startswith("code size PQ32: the smallest")
    assert any(note.startswith("code size PQ32") for note in report.notes)
    out = CliRunner().invoke(cli, ["info", str(index_dir)]).output
    assert "code size PQ32" in out


def test_a_target_met_only_by_sampling_luck_is_not_met(tuned: Path):
    # the cheapest pair's mean reaches the target but its 95% lower bound does not: the next pair is
    # taken, so held-out queries (not the sample) meet the target
    shards = ShardSet.open(tuned, read_manifest(tuned))
    recalls = {(2, 10): tuning.Reached(0.952, 0.941), (2, 30): tuning.Reached(0.97, 0.962)}
    chosen = tuning.choose(shards, recalls, 0.95)
    assert (chosen.nprobe, chosen.refine_factor) == (2, 30) and chosen.met
    assert ">= 0.962 at 95%" in chosen.note
    # the lower bound follows the spread over the queries: all alike, no margin; spread out, a margin
    truth = np.arange(40).reshape(4, 10)
    assert tuning.reached_recall(truth, truth) == (1.0, 1.0)
    half = truth.copy()
    half[:2] = -1
    reached = tuning.reached_recall(half, truth)
    assert reached.mean == 0.5 and reached.low < 0.5 - 0.3


def test_a_stored_query_gets_the_pool_a_search_gets_plus_itself(tuned: Path, monkeypatch):
    # a search of k with refine R re-scores k x R candidates; the tuner's stored-vector queries find
    # themselves first, so they get k x R + 1, never (k + 1) x R (which measured 0.025 too high)
    shards = ShardSet.open(tuned, read_manifest(tuned))
    pools: list[int] = []
    real_refine = shards.refine

    def spy(queries, ids, keep=None):
        pools.append(ids.shape[1])
        return real_refine(queries, ids, keep=keep)

    monkeypatch.setattr(shards, "refine", spy)
    exclude, queries = tuning.sample_queries(shards, 20)
    truth = tuning.exact_neighbours(shards, queries, exclude)
    tuning.measure_grid(shards, queries, exclude, truth, nprobes=(4,), refine_factors=(2, 5))
    assert pools == [10 * 2 + 1, 10 * 5 + 1]
