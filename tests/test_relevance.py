"""Where relevance ends (the calibrated "likely relevant" flag) and near-duplicates folded into one hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine import SearchEngine
from babelsearch.engine.relevance import RELEVANCE_Z, calibrate
from babelsearch.indexer import index_embeddings

from .conftest import clustered_vectors


def test_calibration_is_the_bank_queries_score_distribution():
    bank = np.arange(1000, dtype=np.float32).reshape(-1, 1)
    seen = []

    def pool_scores(queries):
        seen.append(len(queries))
        return np.column_stack([queries[:, 0], queries[:, 0] * 0 + 1.0, np.full(len(queries), np.nan)])

    calibration = calibrate(pool_scores, bank, "distance", "all", z=2.0, sample=100)
    scores = np.concatenate([bank[np.linspace(0, 999, 100).round().astype(int), 0], np.ones(100)])
    assert seen == [100]
    assert calibration.mean == pytest.approx(scores.mean()) and calibration.std == pytest.approx(scores.std())
    assert calibration.threshold == pytest.approx(scores.mean() + 2.0 * scores.std())
    assert calibrate(pool_scores, np.zeros((0, 1), np.float32), "distance", "all") is None


@pytest.mark.slow
def test_the_flag_marks_the_matching_photo_and_not_a_query_about_nothing(shared_sample_index: Path):
    engine = SearchEngine.open(shared_sample_index)
    calibration = engine.relevance_calibration()
    assert calibration.mode == engine.rerank_defaults["mode"] and calibration.z == RELEVANCE_Z
    hits = engine.search("Katze", k=10)
    assert hits[0].relevant is True and Path(hits[0].path).stem in {"n02123045", "n02123159", "n02124075"}
    assert all(hit.relevant == (hit.score >= calibration.threshold) for hit in hits)
    assert hits[-1].relevant is False  # one photo per class: not ten cats
    # nothing in the sample is a query about nothing: nothing is flagged, though ten hits are listed
    nonsense = engine.search("qxzvvkj wplf", k=10)
    assert len(nonsense) == 10 and not any(hit.relevant for hit in nonsense)
    # each rerank setting is judged against its own distribution
    plain = engine.search("Katze", k=10, rerank="none")
    threshold = engine.relevance_threshold("none")
    assert threshold != calibration.threshold
    assert all(hit.relevant == (hit.score >= threshold) for hit in plain)
    # image queries rank by plain cosine among photos: the text calibration does not apply
    assert all(hit.relevant is None for hit in engine.similar(hits[0].id, k=5))


def test_no_bank_no_flag(tmp_path: Path):
    np.save(tmp_path / "x.npy", clustered_vectors(300, dim=16, seed=2))
    index_embeddings(tmp_path / "x.npy", tmp_path / "index")
    engine = SearchEngine.open(tmp_path / "index")
    hits = engine.search_vectors(clustered_vectors(2, dim=16, seed=5), k=5)[0]
    assert len(hits) == 5 and all(hit.relevant is None for hit in hits)
    assert hits[0].to_json()["relevant"] is None and engine.relevance_calibration() is None


def test_collapse_folds_near_identical_photos_into_the_best(colour_index: Path):
    engine = SearchEngine.open(colour_index, model="test-colours")
    plain = engine.search("red", k=4, rerank="none")
    reds = [hit.id for hit in plain if Path(hit.path).name.startswith("red")]
    assert len(reds) == 3 and [hit.id for hit in plain[:3]] == reds  # three near-identical reds first
    folded = engine.search("red", k=4, rerank="none", collapse=True)
    assert len(folded) == 4
    assert folded[0].id == reds[0] and sorted(folded[0].similar) == sorted(reds[1:])
    # the places the folded copies left are taken by the next distinct photos (one of each colour)
    assert sorted(Path(hit.path).name[:3] for hit in folded) == ["blu", "gre", "red", "yel"]
    assert folded[0].to_json()["similar"] == folded[0].similar
    assert all(hit.similar == [] for hit in plain)
