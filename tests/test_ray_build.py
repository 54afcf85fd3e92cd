"""Distributed builds on Ray (indexer/distributed.py) give the index a single-process build gives.

One local Ray with 2 CPUs serves the whole module (started once: it takes seconds). The photos are
60 real ones from the shared sample, embedded by the real babel-lite; the colour encoder of
conftest.py stands in where the model adds nothing (the IVF shard fill, the command line).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
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
from babelsearch.indexer.distributed import STAGING
from babelsearch.indexer.files import DEBUG_KILL_ENV
from babelsearch.indexer.ray_staging import DEBUG_CRASH_ENV

from .conftest import SHARED_SAMPLE, write_image

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["dog", "ein Hund im Schnee", "猫", "ракета", "un oiseau", "pájaro", "自動車", "गाड़ी"]
BATCH = 8  # small model batches: 60 photos make 8 parts, so both workers get some


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ray-crash")


@pytest.fixture(scope="module")
def ray_address(crash_dir: Path):
    """One local Ray (2 CPUs, no dashboard) for the module; its address, for drivers in subprocesses."""
    import ray

    # the workers inherit the environment Ray starts with: the crash hook is armed per test, by a file
    os.environ[DEBUG_CRASH_ENV] = str(crash_dir)
    try:
        context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        os.environ.pop(DEBUG_CRASH_ENV, None)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """60 real photos of the shared sample, in a folder of their own."""
    images = SHARED_SAMPLE / "images"
    if not images.is_dir():
        pytest.skip("../shared/data/imagenet-sample is not present")
    folder = tmp_path_factory.mktemp("ray-photos") / "photos"
    folder.mkdir()
    for path in sorted(images.iterdir())[:60]:
        shutil.copy2(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def local_index(photos: Path, tmp_path_factory) -> Path:
    """The single-process build every Ray build is compared with."""
    index_dir = tmp_path_factory.mktemp("ray-local") / "index"
    build_index([photos], index_dir, model="babel-lite", batch_size=BATCH)
    return index_dir


def catalog(index_dir: Path, root: Path) -> list[tuple]:
    """Every image's row (paths relative to ``root``), in id order."""
    with sqlite3.connect(index_dir / "catalog.db") as db:
        rows = db.execute(
            "select id, path, bytes, mtime, sha256, width, height, taken_at, taken_from, format, hex(signature) "
            "from images order by id"
        ).fetchall()
    return [(i, str(Path(p).relative_to(root)), *rest) for i, p, *rest in rows]


def vectors(index_dir: Path) -> dict[int, np.ndarray]:
    manifest = read_manifest(index_dir)
    batches = list(ShardSet.open(index_dir, manifest).iter_vectors())
    ids = np.concatenate([b[0] for b in batches])
    assert len(np.unique(ids)) == len(ids), "an id is in the shards twice"
    return dict(zip(ids.tolist(), np.concatenate([np.asarray(b[1], np.float32) for b in batches])))


def assert_same_index(built: Path, built_root: Path, reference: Path, reference_root: Path) -> None:
    """Same ids and paths, vectors equal within float tolerance, same top-10 in several languages."""
    assert catalog(built, built_root) == catalog(reference, reference_root)
    got, want = vectors(built), vectors(reference)
    assert got.keys() == want.keys()
    for i, vector in want.items():
        np.testing.assert_allclose(got[i], vector, atol=1e-5)
    a, b = SearchEngine.open(built), SearchEngine.open(reference)
    for query, hits_a, hits_b in zip(QUERIES, a.search_many(QUERIES, k=10), b.search_many(QUERIES, k=10)):
        assert [h.id for h in hits_a] == [h.id for h in hits_b], query
    assert not (built / STAGING).exists()  # what was staged is committed, and the staging is gone


@pytest.mark.slow  # about 15-20 s each (Ray's actor pool starts per build); still run in CI
def test_a_ray_build_equals_the_single_process_build(ray_address, photos: Path, local_index: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    report = build_index([photos], index_dir, model="babel-lite", batch_size=BATCH, ray=True)
    assert (report.indexed, report.skipped, report.reused) == (60, [], 0)
    assert_same_index(index_dir, photos, local_index, photos)
    assert sum(n for n, _ in report.workers.values()) == 60  # every image embedded by a Ray worker, once
    assert all(seconds > 0 for _, seconds in report.workers.values())
    assert "Ray workers (images/s each)" in report.summary()


@pytest.mark.slow  # about 15-20 s each (Ray's actor pool starts per build); still run in CI
def test_a_rerun_on_ray_adds_only_the_new_files(ray_address, photos: Path, local_index: Path, tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = sorted(p.name for p in photos.iterdir())
    for name in names[:40]:
        shutil.copy2(photos / name, folder / name)
    index_dir = tmp_path / "index"
    first = build_index([folder], index_dir, model="babel-lite", batch_size=BATCH, ray=True)
    assert first.indexed == 40
    for name in names[40:]:  # they sort after the others, so a one-go build gives them the same ids
        shutil.copy2(photos / name, folder / name)
    again = build_index([folder], index_dir, batch_size=BATCH, ray=True)
    assert (again.indexed, again.unchanged, again.changed, again.removed) == (20, 40, 0, 0)
    assert sum(n for n, _ in again.workers.values()) == 20  # only the new files were embedded
    assert_same_index(index_dir, folder, local_index, photos)
    assert build_index([folder], index_dir, ray=True).indexed == 0


@pytest.mark.slow  # about 15-20 s each (Ray's actor pool starts per build); still run in CI
def test_a_killed_driver_resumes_and_ends_equal(ray_address, photos: Path, local_index: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    env = {k: v for k, v in os.environ.items() if k != DEBUG_KILL_ENV}
    env[DEBUG_KILL_ENV] = "before-catalog:2"  # the second shard is in the manifest, its catalog rows not yet
    args = [str(photos), "--index", str(index_dir), "-q", "--batch-size", str(BATCH), "--shard-size", "16"]
    killed = subprocess.run(
        [sys.executable, "-m", "babelsearch", "index", *args, "--ray", ray_address],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr  # SIGKILL: no cleanup ran
    assert SearchEngine.open(index_dir).count == 16  # what was committed is searchable
    assert any((index_dir / STAGING).glob("run-*/part-*.npz"))  # and more was staged

    report = build_index([photos], index_dir, batch_size=BATCH, ray=True)
    assert (report.unchanged, report.indexed) == (16, 44)
    # the staged images were not embedded again: the workers embedded only the rest
    assert report.reused >= 16
    assert sum(n for n, _ in report.workers.values()) == 44 - report.reused
    assert_same_index(index_dir, photos, local_index, photos)
    manifest = read_manifest(index_dir)
    referenced = {Path(n).name for s in manifest.shards for n in (s.file, s.ids, s.vectors)}
    assert {p.name for p in (index_dir / "shards").iterdir()} == referenced  # no leftovers


@pytest.mark.slow  # about 15-20 s each (Ray's actor pool starts per build); still run in CI
def test_a_task_ray_retries_adds_nothing_twice(
    ray_address, crash_dir: Path, photos: Path, local_index: Path, tmp_path: Path
):
    (crash_dir / "arm").touch()  # the first worker that writes a part then kills itself (SIGKILL)
    index_dir = tmp_path / "index"
    report = build_index([photos], index_dir, model="babel-lite", batch_size=BATCH, ray=True)
    assert (crash_dir / "fired").exists()  # a worker did die after staging its part; Ray redid that part
    (crash_dir / "fired").unlink()
    assert report.indexed == 60
    assert_same_index(index_dir, photos, local_index, photos)


def colour_photos(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(5)
    for i, colour in enumerate(rng.integers(10, 245, (n, 3))):
        write_image(folder / f"c{i:03d}.png", tuple(int(c) for c in colour), size=(24, 16), noise_seed=i)
    return folder


@pytest.mark.slow  # about 15-20 s each (Ray's actor pool starts per build); still run in CI
def test_ivf_shards_are_filled_on_ray_from_the_one_trained_quantizer(ray_address, tmp_path: Path):
    folder = colour_photos(tmp_path / "colours", 100)
    options = IndexOptions(shard_size=16, index_factory="IVF4,Flat")
    local = build_index([folder], tmp_path / "local", model="test-colours", batch_size=BATCH, options=options)
    report = build_index([folder], tmp_path / "ray", model="test-colours", batch_size=BATCH, options=options, ray=True)
    assert any("shards from the trained quantizer in Ray tasks" in note for note in report.notes), report.notes
    assert report.indexed == local.indexed == 100
    a, b = read_manifest(tmp_path / "ray"), read_manifest(tmp_path / "local")
    assert a.factory == b.factory == "IVF4,Flat"
    assert a.trained_sha256 == b.trained_sha256  # trained once, on the same sample
    assert [s.count for s in a.shards] == [s.count for s in b.shards]
    got, want = vectors(tmp_path / "ray"), vectors(tmp_path / "local")
    assert got.keys() == want.keys() and all(np.array_equal(got[i], want[i]) for i in want)
    ray_engine, local_engine = SearchEngine.open(tmp_path / "ray"), SearchEngine.open(tmp_path / "local")
    for query in ("red", "green", "blue", "yellow"):
        assert [h.id for h in ray_engine.search(query, k=10)] == [h.id for h in local_engine.search(query, k=10)]


def test_the_command_line_builds_on_ray(ray_address, tmp_path: Path):
    folder = colour_photos(tmp_path / "colours", 12)
    runner = CliRunner()
    index = ["index", str(folder), "--index", str(tmp_path / "index"), "--model", "test-colours", "-q"]
    result = runner.invoke(cli, [*index, "--ray"])  # this process's Ray session is the one used
    assert result.exit_code == 0, result.output
    assert "indexed 12" in result.output and "Ray workers (images/s each)" in result.output
    result = runner.invoke(cli, ["index", "--index", str(tmp_path / "x"), "--ray", str(folder)])
    assert result.exit_code != 0 and "--ray=ADDRESS" in result.output  # a SOURCE after --ray is not an address
    vectors_file = tmp_path / "v.npy"
    np.save(vectors_file, np.eye(4, dtype=np.float32))
    result = runner.invoke(cli, ["index", "--embeddings", str(vectors_file), "--index", str(tmp_path / "y"), "--ray"])
    assert result.exit_code == 2 and "--embeddings" in result.output


def test_without_ray_installed_ray_is_one_clear_error(monkeypatch, tmp_path: Path):
    folder = colour_photos(tmp_path / "colours", 2)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = CliRunner().invoke(cli, ["index", str(folder), "--index", str(tmp_path / "index"), "--ray"])
    assert result.exit_code == 1
    assert "pip install 'babelsearch[ray]'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "index").exists()  # refused before anything was written
