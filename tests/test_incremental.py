"""Re-runs bring an index up to date; an interrupted run (kill -9) loses at most the shard being written."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from babelsearch.cli import cli
from babelsearch.engine import SearchEngine
from babelsearch.engine.layout import read_manifest
from babelsearch.engine.shards import ShardSet
from babelsearch.indexer import IndexOptions, build_index
from babelsearch.indexer.files import DEBUG_KILL_ENV

from .conftest import COLOURS, clustered_vectors, exact_top_k, recall, write_image

ROOT = Path(__file__).resolve().parent.parent


def names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


def test_rerun_removes_gone_files_and_reembeds_changed_ones(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours", options=IndexOptions(shard_size=3))
    assert len(read_manifest(index_dir).shards) == 3
    before = {h.path: h.id for h in SearchEngine.open(index_dir).search("red", k=8)}

    gone = next(colour_folder.rglob("green0.*"))
    gone.unlink()
    changed = next(colour_folder.rglob("blue1.*"))
    write_image(changed, COLOURS["red"], noise_seed=50)  # same name, now red
    touched = next(colour_folder.rglob("yellow0.*"))
    os.utime(touched, (1_000_000, 1_000_000))  # only the mtime changes: no re-embedding
    report = build_index([colour_folder], index_dir)
    assert (report.indexed, report.changed, report.removed, report.unchanged) == (1, 1, 1, 6)

    engine = SearchEngine.open(index_dir)
    assert engine.count == 7 == engine.info()["vectors"]
    assert gone.name not in names(engine.search("green", k=7))
    assert changed.name in names(engine.search("red", k=3))
    assert changed.name not in names(engine.search("blue", k=1))
    after = {h.path: h.id for h in engine.search("red", k=7)}
    assert after[str(changed)] > max(before.values())  # re-embedded under a fresh id
    assert all(after[p] == i for p, i in before.items() if p in after and p != str(changed))
    row = next(engine.catalog.query("select mtime from images where path = ?", [str(touched)]))
    assert row["mtime"] == 1_000_000
    assert build_index([colour_folder], index_dir).indexed == 0  # nothing left to do


def test_files_outside_this_runs_sources_are_never_removed(colour_folder: Path, tmp_path: Path):
    other = tmp_path / "other"
    write_image(other / "extra.png", COLOURS["blue"], noise_seed=9)
    index_dir = tmp_path / "index"
    build_index([colour_folder, other], index_dir, model="test-colours")
    (other / "extra.png").unlink()
    report = build_index([colour_folder], index_dir)  # `other` is not a source this time
    assert report.removed == 0 and SearchEngine.open(index_dir).count == 9
    report = build_index([colour_folder, other], index_dir)
    assert report.removed == 1 and SearchEngine.open(index_dir).count == 8


@pytest.fixture(scope="module")
def crash_vectors(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """4000 base vectors saved as .npy, and 50 held-out queries from the same clusters."""
    x = clustered_vectors(4050, dim=32, seed=11)
    path = tmp_path_factory.mktemp("crash") / "vectors.npy"
    np.save(path, x[:4000])
    return path, x[:4000], x[4000:]


def run_index(vectors: Path, index_dir: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != DEBUG_KILL_ENV}
    if kill_at:
        env[DEBUG_KILL_ENV] = kill_at
    args = ["--embeddings", vectors, "--index", index_dir, "--shard-size", "500", "--index-factory", "IVF32,PQ8"]
    return subprocess.run(
        [sys.executable, "-m", "babelsearch", "index", "-q", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "kill_at, rows_kept",
    [
        pytest.param("before-manifest:1", 0, marks=pytest.mark.slow),  # before the trained index is committed
        pytest.param("before-trained:1", 0, marks=pytest.mark.slow),  # manifest says trained, trained.faiss not saved
        pytest.param("shard-written:2", 500, marks=pytest.mark.slow),  # second shard half written
        ("before-catalog:3", 1000),  # third shard committed, its catalog rows not yet
        pytest.param("after-checkpoint:1", 4000, marks=pytest.mark.slow),  # all written, manifest not final
    ],
)
def test_a_killed_run_loses_at_most_one_shard_and_the_next_run_resumes(
    crash_vectors, tmp_path: Path, kill_at: str, rows_kept: int
):
    vectors, x, queries = crash_vectors
    index_dir = tmp_path / "index"
    killed = run_index(vectors, index_dir, kill_at)
    assert killed.returncode == -9, killed.stderr  # SIGKILL: no cleanup ran

    if rows_kept:  # what was committed before the kill is searchable as it is
        engine = SearchEngine.open(index_dir)
        assert engine.count == rows_kept
        hits = engine.search_vectors(x[:rows_kept:97], k=1, nprobe=32, refine_factor=10)
        assert [row[0].id for row in hits] == list(range(0, rows_kept, 97))
        trained = read_manifest(index_dir).trained_sha256

    resumed = run_index(vectors, index_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert f"unchanged {rows_kept}" in resumed.stdout
    engine = SearchEngine.open(index_dir)
    shards = ShardSet.open(index_dir, engine.manifest)
    ids = np.concatenate([batch[0] for batch in shards.iter_vectors()])
    assert sorted(ids.tolist()) == list(range(4000))  # every vector exactly once
    assert engine.count == 4000 == engine.manifest.images
    if rows_kept:
        assert engine.manifest.trained_sha256 == trained  # resumed, not retrained
    referenced = {Path(n).name for s in engine.manifest.shards for n in (s.file, s.ids, s.vectors)}
    assert {p.name for p in (index_dir / "shards").iterdir()} == referenced  # no leftovers
    found = [[h.id for h in row] for row in engine.search_vectors(queries, k=10, nprobe=8, refine_factor=10)]
    assert recall(found, exact_top_k(x, queries, 10)) >= 0.95


def test_cli_embeddings_round_trip_and_settings(crash_vectors, tmp_path: Path):
    vectors = crash_vectors[0]
    index_dir = tmp_path / "index"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "index",
            "--embeddings",
            str(vectors),
            "--index",
            str(index_dir),
            "--index-factory",
            "IVF32,PQ8",
            "--shard-size",
            "1500",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "index factory: IVF32,PQ8 (as requested)" in result.output and "indexed 4000" in result.output
    info = runner.invoke(cli, ["info", str(index_dir)]).output
    assert "IVF32,PQ8" in info and "shards: 3 (at most 1500" in info and "nprobe" in info
    result = runner.invoke(cli, ["search", str(index_dir), "cat"])
    assert result.exit_code == 1 and "precomputed vectors" in result.output

    for args, message in [
        (["index", "--index", str(tmp_path / "x")], "give SOURCES"),
        (["index", str(tmp_path), "--embeddings", str(vectors), "--index", str(tmp_path / "x")], "not both"),
        (["index", "--embeddings", str(vectors), "--index", str(tmp_path / "x"), "--device", "cuda"], "no GPU"),
        (["index", "--embeddings", str(tmp_path / "nope.npy"), "--index", str(tmp_path / "x")], "does not exist"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code in (1, 2) and message in result.output and "Traceback" not in result.output
