import json
from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine import IncompatibleIndex, IndexNotFound, InvalidQuery, SearchEngine
from babelsearch.engine.layout import read_manifest
from babelsearch.indexer import build_index

from .conftest import COLOURS, write_image


def test_index_then_search_finds_each_colour(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    report = build_index([colour_folder], index_dir, model="test-colours", batch_size=3)
    assert (report.indexed, report.unchanged, len(report.skipped)) == (8, 0, 0)

    engine = SearchEngine.open(index_dir)
    for colour in COLOURS:
        hits = engine.search(colour, k=2)
        assert len(hits) == 2
        assert all(Path(h.path).name.startswith(colour) for h in hits), (colour, hits)
        assert hits[0].score >= hits[1].score
    batch = engine.search_many(["red", "blue"], k=8)
    assert [len(h) for h in batch] == [8, 8]
    assert Path(batch[1][0].path).name.startswith("blue")


def test_manifest_and_catalog_describe_the_index(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format"] == "babelsearch-index" and manifest["format_version"] == 2
    assert manifest["factory"] == "Flat" and manifest["refine_dtype"] == "float32"
    assert (manifest["model"], manifest["dim"], manifest["metric"]) == ("test-colours", 4, "inner_product")
    assert manifest["images"] == 8 and sum(s["count"] for s in manifest["shards"]) == 8
    hit = SearchEngine.open(index_dir).search("green", k=1)[0]
    row = hit.metadata
    assert row["id"] == hit.id and row["path"] == hit.path
    assert (row["width"], row["height"]) == (64, 48)
    assert row["bytes"] == Path(hit.path).stat().st_size and len(row["sha256"]) == 64


def test_rerun_adds_only_new_images_and_keeps_ids(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    before = {h.path: h.id for h in SearchEngine.open(index_dir).search("red", k=8)}
    write_image(colour_folder / "late" / "yellow9.png", COLOURS["yellow"], noise_seed=99)
    report = build_index([colour_folder], index_dir)  # the index's own model is used
    assert (report.indexed, report.unchanged) == (1, 8)
    engine = SearchEngine.open(index_dir)
    assert engine.count == 9 and read_manifest(index_dir).images == 9
    after = {h.path: h.id for h in engine.search("red", k=9)}
    assert all(after[p] == i for p, i in before.items())
    assert len(set(after.values())) == 9


def test_unreadable_files_are_skipped_and_reported(colour_folder: Path, tmp_path: Path):
    (colour_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (colour_folder / "empty.png").write_bytes(b"")
    report = build_index([colour_folder], tmp_path / "index", model="test-colours")
    assert report.indexed == 8
    assert sorted(Path(f.path).name for f in report.skipped) == ["broken.jpg", "empty.png"]
    assert "skipped 2" in report.summary()


def test_opening_with_another_model_is_refused(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    with pytest.raises(IncompatibleIndex, match="built with model 'test-colours', not 'babel-lite'"):
        SearchEngine.open(index_dir, model="babel-lite")
    with pytest.raises(IncompatibleIndex, match="built with model 'test-colours'"):
        build_index([colour_folder], index_dir, model="babel-lite")
    assert SearchEngine.open(index_dir).count == 8  # nothing was lost


def test_missing_and_foreign_directories(tmp_path: Path, colour_folder: Path):
    with pytest.raises(IndexNotFound, match="does not exist"):
        SearchEngine.open(tmp_path / "absent")
    with pytest.raises(IndexNotFound, match="manifest.json is missing"):
        SearchEngine.open(colour_folder)
    with pytest.raises(IncompatibleIndex, match="not empty and holds no babelsearch index"):
        build_index([colour_folder], colour_folder, model="test-colours")
    (tmp_path / "newer").mkdir()
    (tmp_path / "newer" / "manifest.json").write_text(
        json.dumps({"format": "babelsearch-index", "format_version": 99, "model": "x", "dim": 4})
    )
    with pytest.raises(IncompatibleIndex, match="upgrade babelsearch"):
        SearchEngine.open(tmp_path / "newer")


def test_bad_queries_are_refused_clearly(colour_folder: Path, tmp_path: Path):
    build_index([colour_folder], tmp_path / "index", model="test-colours")
    engine = SearchEngine.open(tmp_path / "index")
    for bad_text, message in [("", "empty"), ("   ", "empty"), ("x" * 1001, "too long")]:
        with pytest.raises(InvalidQuery, match=message):
            engine.search(bad_text)
    for bad_k in (0, -1, 1001, 2.5, True):
        with pytest.raises(InvalidQuery, match="k must be"):
            engine.search("red", k=bad_k)
    assert len(engine.search("red", k=1000)) == 8


def test_vectors_without_catalog_rows_are_never_shown_and_get_dropped(colour_folder: Path, tmp_path: Path):
    """Simulates a crash after the shard was written but before its catalog rows were."""
    import sqlite3

    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    with sqlite3.connect(index_dir / "catalog.db") as conn:
        gone = conn.execute("select id, path from images where path like '%red0%'").fetchone()
        conn.execute("delete from images where id = ?", (gone[0],))
    hits = SearchEngine.open(index_dir).search("red", k=8)
    assert gone[0] not in {h.id for h in hits} and len(hits) == 7
    report = build_index([colour_folder], index_dir)
    assert report.indexed == 1  # the lost image is embedded again, under a fresh id
    engine = SearchEngine.open(index_dir)
    assert engine.info()["vectors"] == 8 == engine.count
    assert np.any([Path(h.path).name == "red0.jpg" for h in engine.search("red", k=2)])


def test_stored_vectors_by_id_and_in_bulk(colour_folder: Path, tmp_path: Path):
    from babelsearch.engine.shards import ShardSet

    build_index([colour_folder], tmp_path / "index", model="test-colours", batch_size=3)
    engine = SearchEngine.open(tmp_path / "index")
    shards = ShardSet.open(engine.index_dir, engine.manifest)
    batches = list(shards.iter_vectors(batch_size=3))
    ids = np.concatenate([b[0] for b in batches])
    vectors = np.concatenate([b[1] for b in batches])
    assert sorted(ids.tolist()) == list(range(8)) and vectors.shape == (8, 4)
    picked = shards.vectors_for_ids([int(ids[5]), int(ids[2])])
    assert np.allclose(picked, vectors[[5, 2]])
    hit = engine.search_vectors(picked[:1], k=1, rerank="none")[0][0]
    assert hit.id == int(ids[5]) and hit.score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(KeyError):
        shards.vectors_for_ids([999])


def test_an_index_of_another_model_version_is_refused(colour_folder: Path, tmp_path: Path):
    """Same model name, other vectors (a changed recipe): refused for searching and for adding."""
    from babelsearch.engine.encoders import register_encoder

    from .conftest import ColourEncoder

    class ColourEncoderV1(ColourEncoder):
        version = "1"

    class ColourEncoderV2(ColourEncoder):
        version = "2"

    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, encoder=ColourEncoderV1())
    assert json.loads((index_dir / "manifest.json").read_text())["settings"]["model_version"] == "1"
    assert len(SearchEngine.open(index_dir, encoder=ColourEncoderV1()).search("red", k=2)) == 2
    with pytest.raises(IncompatibleIndex, match="version 1, but this babelsearch's test-colours makes version 2"):
        SearchEngine.open(index_dir, encoder=ColourEncoderV2())
    with pytest.raises(IncompatibleIndex, match="build a new index"):
        build_index([colour_folder], index_dir, encoder=ColourEncoderV2())
    register_encoder("test-colours", lambda spec: ColourEncoderV2())
    try:
        with pytest.raises(IncompatibleIndex, match="makes version 2"):
            SearchEngine.open(index_dir).search("red")
    finally:
        register_encoder("test-colours", lambda spec: ColourEncoder())
    assert SearchEngine.open(index_dir, encoder=ColourEncoderV1()).count == 8  # nothing was lost


def test_refine_covers_k_times_the_factor_and_the_rerank_pool(colour_folder: Path, tmp_path: Path, monkeypatch):
    from babelsearch.engine.shards import ShardSet

    build_index([colour_folder], tmp_path / "index", model="test-colours")
    engine = SearchEngine.open(tmp_path / "index")
    for mode in ("none", "distance"):  # the relevance calibration's own searches happen before the spy
        engine.relevance_calibration(mode)
    asked = []
    original = ShardSet.candidates

    def spy(self, vectors, n, **kwargs):
        asked.append(n)
        return original(self, vectors, n, **kwargs)

    monkeypatch.setattr(ShardSet, "candidates", spy)
    engine.search("red", k=10, rerank="none", refine_factor=5)
    engine.search("red", k=10, rerank="distance", refine_factor=5)
    engine.search("red", k=100, rerank="distance", refine_factor=5)
    pool = engine.rerank_defaults["candidates"]
    assert asked == [50, max(pool, 50), max(pool, 500)]
