"""What the index writer promises (indexer/writer.py, README "Incremental runs"): shards fill up to
shard_size and no further; every added vector is stored once, unit-length, under its id, with its
catalog row; nothing is lost on flush or reopen; removal takes out exactly the given ids (rows and
vectors), rewrites only the shards that held them and deletes the files no longer referenced; ids
keep growing past anything ever stored; bad input is refused with a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine import SearchEngine
from babelsearch.engine.catalog import count_images
from babelsearch.engine.errors import IncompatibleIndex, InvalidSetting
from babelsearch.engine.layout import read_manifest
from babelsearch.engine.shards import ShardSet
from babelsearch.indexer.writer import IndexWriter

DIM = 6


def vectors(ids, scale: float = 3.0) -> np.ndarray:
    """A distinct, not unit-length vector per id (the writer normalises)."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((100, DIM)).astype(np.float32) * scale
    return table[np.asarray(ids)]


def rows(ids) -> list[dict]:
    return [{"id": int(i), "path": f"/photos/{int(i)}.jpg"} for i in ids]


def add(writer: IndexWriter, ids) -> None:
    ids = np.asarray(ids, dtype=np.int64)
    writer.add(ids, vectors(ids), rows(ids))


def open_writer(index_dir: Path, shard_size: int | None = 4) -> IndexWriter:
    return IndexWriter.open(index_dir, model="test-colours", dim=DIM, shard_size=shard_size)


def stored(index_dir: Path) -> dict[int, np.ndarray]:
    manifest = read_manifest(index_dir)
    shards = ShardSet.open(index_dir, manifest)
    return {int(i): v for ids, vecs in shards.iter_vectors() for i, v in zip(ids, vecs)}


def shard_files(index_dir: Path) -> set[str]:
    return {f"shards/{p.name}" for p in (index_dir / "shards").iterdir()}


def referenced(index_dir: Path) -> set[str]:
    return {name for s in read_manifest(index_dir).shards for name in (s.file, s.ids, s.vectors)}


def catalog_ids(index_dir: Path) -> list[int]:
    return sorted(row["id"] for row in SearchEngine.open(index_dir).catalog.query("select id from images"))


def expect_unit(index_dir: Path, ids) -> None:
    have = stored(index_dir)
    assert sorted(have) == sorted(int(i) for i in ids)
    for i in ids:
        want = vectors([i])[0] / np.linalg.norm(vectors([i])[0])
        np.testing.assert_allclose(have[int(i)], want, atol=1e-3)


def test_shards_fill_to_shard_size_and_every_vector_is_stored_once_normalised(tmp_path: Path):
    index_dir = tmp_path / "index"
    with open_writer(index_dir) as writer:
        add(writer, [0, 1, 2])  # fewer than a shard: pending, not yet written
        assert writer.count == 3 and writer.shards == []
        add(writer, [3, 4])  # a shard's worth: everything pending is written at once, a shard at a time
        assert [s.count for s in writer.shards] == [4, 1] and writer.count == 5
        add(writer, [5, 6, 7, 8, 9])
        writer.finish()
    manifest = read_manifest(index_dir)
    assert [s.count for s in manifest.shards] == [4, 4, 2] and manifest.images == 10
    assert referenced(index_dir) == shard_files(index_dir)
    expect_unit(index_dir, range(10))
    assert catalog_ids(index_dir) == list(range(10))
    # a later run tops up the open shard first, then starts new ones
    with open_writer(index_dir, shard_size=None) as writer:
        assert writer.count == 10 and writer.next_id() == 10
        add(writer, [10, 11, 12, 13, 14])
        writer.finish()
    assert [s.count for s in read_manifest(index_dir).shards] == [4, 4, 4, 3]
    expect_unit(index_dir, range(15))
    assert referenced(index_dir) == shard_files(index_dir)  # the replaced open shard's files are gone


def test_next_id_is_past_every_id_stored_or_pending(tmp_path: Path):
    index_dir = tmp_path / "index"
    with open_writer(index_dir) as writer:
        assert writer.next_id() == 0
        add(writer, [7, 3])
        assert writer.next_id() == 8  # pending ids count
        add(writer, [20, 21])  # a full shard: durable
        assert writer.next_id() == 22
        writer.remove([20, 21])
        # catalog rows gone, but the shard still holds 3 and 7: past those
        assert writer.next_id() == 8
        writer.finish()
    with open_writer(index_dir) as writer:
        assert writer.next_id() == 8 and writer.count == 2


def test_remove_takes_out_exactly_the_given_ids_and_only_rewrites_their_shards(tmp_path: Path):
    index_dir = tmp_path / "index"
    with open_writer(index_dir) as writer:
        add(writer, range(10))
        writer.finish()
    untouched = read_manifest(index_dir).shards[0]
    with open_writer(index_dir) as writer:
        assert writer.remove([5, 8, 9, 42]) == 3  # 42 was never there
        assert writer.remove([]) == 0
        writer.finish()
    manifest = read_manifest(index_dir)
    # shard 0 (ids 0-3) untouched, same files; shard 1 rewritten without 5; shard 2 (8, 9) dropped
    assert manifest.shards[0] == untouched and [s.count for s in manifest.shards] == [4, 3]
    assert referenced(index_dir) == shard_files(index_dir)
    expect_unit(index_dir, [0, 1, 2, 3, 4, 6, 7])
    assert catalog_ids(index_dir) == [0, 1, 2, 3, 4, 6, 7] and manifest.images == 7
    with open_writer(index_dir) as writer:
        assert writer.count == 7


def test_pending_vectors_can_be_removed_before_they_are_written(tmp_path: Path):
    index_dir = tmp_path / "index"
    with open_writer(index_dir, shard_size=100) as writer:
        add(writer, [1, 2, 3])
        assert writer.remove([2]) == 0  # no catalog row yet: but the pending vector goes too
        assert writer.count == 2
        writer.finish()
    expect_unit(index_dir, [1, 3])
    assert catalog_ids(index_dir) == [1, 3]


def test_bad_input_is_refused(tmp_path: Path):
    index_dir = tmp_path / "index"
    with pytest.raises(InvalidSetting, match="shard_size must be at least 1"):
        open_writer(index_dir, shard_size=0)
    with open_writer(index_dir) as writer:
        with pytest.raises(ValueError, match="same length"):
            writer.add(np.array([1, 2]), vectors([1]), rows([1, 2]))
        with pytest.raises(ValueError, match="same length"):
            writer.add(np.array([1]), vectors([1]), rows([1, 2]))
        writer.add(np.array([], dtype=np.int64), np.zeros((0, DIM), np.float32), [])
        assert writer.count == 0 and writer.shards == []
        add(writer, [1, 1])
        with pytest.raises(ValueError, match="duplicate ids"):
            writer.flush()
    with open_writer(index_dir) as writer:
        add(writer, [1, 2])
        writer.finish()
    with pytest.raises(IncompatibleIndex, match=f"vectors have dim 5, index .* has {DIM}"):
        IndexWriter.open(index_dir, dim=5)


def test_search_targets_are_checked_and_replace_each_other(tmp_path: Path):
    with open_writer(tmp_path / "index") as writer:
        settings = writer.manifest.settings
        for bad in (0, -0.5, 1.01):
            with pytest.raises(InvalidSetting, match=r"target recall must be in \(0, 1\]"):
                writer.set_targets(recall=bad)
        for bad in (0, -3):
            with pytest.raises(InvalidSetting, match="target latency must be positive"):
                writer.set_targets(latency_ms=bad)
        with pytest.raises(InvalidSetting, match="not both"):
            writer.set_targets(recall=0.9, latency_ms=5)
        writer.set_targets(recall=1.0)
        assert settings["target_recall"] == 1.0
        writer.set_targets(latency_ms=2.5)
        assert settings["target_latency_ms"] == 2.5 and "target_recall" not in settings
        writer.set_targets(recall=0.9)
        assert settings["target_recall"] == 0.9 and "target_latency_ms" not in settings
        writer.set_targets()  # neither: the index's own stay
        assert settings["target_recall"] == 0.9


def test_the_writer_holds_the_lock_until_closed(tmp_path: Path):
    from babelsearch.engine import IndexBusy

    index_dir = tmp_path / "index"
    writer = open_writer(index_dir)
    with pytest.raises(IndexBusy):
        IndexWriter.open(index_dir, model="test-colours", dim=DIM, lock_wait=0)
    writer.close()
    with open_writer(index_dir) as again:
        assert count_images(again.db) == 0


def test_next_id_is_past_vectors_that_have_no_catalog_row_yet(tmp_path: Path):
    # the window between a shard's commit and its catalog rows (module doc, step 2 -> 3): an id
    # handed out then must not collide with a vector already in a shard
    with open_writer(tmp_path / "index") as writer:
        add(writer, [0, 1])
        writer.flush()
        ids = np.array([2, 5, 9], np.int64)
        writer.commit(writer.shards + [writer.write_shard(ids, vectors(ids), writer.refine_dtype)], [])
        assert writer.next_id() == 10


def test_a_bad_build_setting_is_one_line_from_the_cli_not_a_traceback(colour_folder: Path, tmp_path: Path):
    from click.testing import CliRunner

    from babelsearch.cli import cli
    from babelsearch.indexer import build_index

    with pytest.raises(InvalidSetting, match="batch_size must be at least 1"):
        build_index([colour_folder], tmp_path / "index", model="test-colours", batch_size=0)
    result = CliRunner().invoke(
        cli, ["index", str(colour_folder), "--index", str(tmp_path / "index"), "--shard-size", "0", "-q"]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "shard" in result.output.lower() and isinstance(result.exception, SystemExit)
