"""The self-tuning search defaults: a target met, one that cannot be met, per-call overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine import SearchEngine
from babelsearch.engine.layout import read_manifest
from babelsearch.engine.shards import ShardSet
from babelsearch.indexer import IndexOptions, index_embeddings
from babelsearch.indexer.tuning import tune

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


def test_an_unreachable_target_from_an_index_run_is_recorded_with_its_note(data, tmp_path: Path):
    path, _, _ = data
    index_dir = tmp_path / "index"
    index_embeddings(path, index_dir, options=IndexOptions(index_factory="IVF64,PQ1", target_recall=1.0))
    settings = read_manifest(index_dir).settings
    if settings["measured_recall"] < 1.0:  # one byte per vector: not even refine x100 orders all ten
        assert "not met" in settings["tuning_note"]


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
