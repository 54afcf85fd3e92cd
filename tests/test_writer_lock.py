"""Every writer of an index holds the one index lock for its whole read-modify-write of the manifest.

A writer that read the manifest, let another run commit, and then wrote its stale copy back would
name shard files the other run had already deleted: the index would be gone. Each race below holds
one writer (in a subprocess) between its manifest read and its write, with a file handshake rather
than a sleep, lets a second writer try, and checks that nothing of either run is lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from babelsearch.engine import IndexBusy, SearchEngine
from babelsearch.engine.layout import read_manifest
from babelsearch.engine.shards import ShardSet
from babelsearch.indexer import build_index
from babelsearch.indexer.bank_terms import update_image_terms
from babelsearch.indexer.files import DEBUG_KILL_ENV, DEBUG_PAUSE_ENV, acquire_lock, release_lock
from babelsearch.indexer.writer import IndexWriter

from .conftest import COLOURS, write_image

ROOT = Path(__file__).resolve().parent.parent
POINT = "bank-before-manifest"  # bank terms computed, the manifest not yet written back
# the command line with the test encoder registered, as a user's `babelsearch` would run
CLI = "import sys, tests.conftest; from babelsearch.cli import main; sys.argv[0] = 'babelsearch'; main()"


def photos(folder: Path, prefix: str, seed: int) -> Path:
    for n, (colour, rgb) in enumerate(COLOURS.items()):
        write_image(folder / f"{prefix}-{colour}.png", rgb, noise_seed=seed + n)
    return folder


def command(kind: str, index_dir: Path, folder: Path | None) -> list[str]:
    if kind == "bank":
        return ["bank", "update", str(index_dir)]
    return ["index", str(folder), "--index", str(index_dir), "-q"]


def environment(tmp_path: Path, pause: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (DEBUG_KILL_ENV, DEBUG_PAUSE_ENV)}
    env["BABELSEARCH_CACHE"] = str(tmp_path / "cache")
    if pause:
        env[DEBUG_PAUSE_ENV] = pause
    return env


def wait_until_paused(process: subprocess.Popen, marker: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(
                f"the paused writer exited ({process.returncode}) before {marker.name}: {process.stderr.read()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {marker} within {timeout} s")
        time.sleep(0.05)


@pytest.mark.parametrize(
    "paused, contender",
    [
        ("bank", "index"),  # `bank update` between read and write; an `index` run commits meanwhile
        ("index", "index"),  # an `index` run in its bank-terms step; another `index` run commits meanwhile
        ("index", "bank"),  # an `index` run in its bank-terms step; `bank update` meanwhile
    ],
)
def test_a_writer_paused_between_manifest_read_and_write_loses_nothing(
    colour_folder: Path, tmp_path: Path, paused: str, contender: str
):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    expected = {p.name for p in colour_folder.rglob("*.*")}
    paused_folder = photos(tmp_path / "b", "b", seed=100) if paused == "index" else None
    contender_folder = photos(tmp_path / "c", "c", seed=200) if contender == "index" else None

    handshake = tmp_path / "handshake"
    held = subprocess.Popen(
        [sys.executable, "-c", CLI, *command(paused, index_dir, paused_folder)],
        cwd=ROOT,
        env=environment(tmp_path, f"{POINT}:{handshake}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    contender_run = None
    try:
        wait_until_paused(held, handshake / f"{POINT}.paused")
        # the second writer waits its turn, saying whom it waits for, instead of failing at once
        contender_run = subprocess.Popen(
            [sys.executable, "-c", CLI, *command(contender, index_dir, contender_folder), "--wait", "240"],
            cwd=ROOT,
            env=environment(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        announced = contender_run.stderr.readline()
        holder = {"bank": "babelsearch bank update", "index": "babelsearch index"}[paused]
        assert f"another `{holder}` run (pid {held.pid}) is writing" in announced, announced
        assert "waiting up to 4 min for it to finish" in announced
        assert contender_run.poll() is None  # still waiting: the held writer has not finished
        (handshake / f"{POINT}.go").touch()
        out, err = held.communicate(timeout=300)
        contender_out, contender_err = contender_run.communicate(timeout=300)
    finally:
        for process in (held, contender_run):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert held.returncode == 0, err
    assert contender_run.returncode == 0 and "Traceback" not in contender_err, contender_err

    # the paused writer wrote back a manifest that names only files that exist, and the index searches
    manifest = read_manifest(index_dir)
    for shard in manifest.shards:
        for name in (shard.file, shard.ids, shard.vectors):
            assert (index_dir / name).is_file(), f"the manifest names {name}, which is gone"
    assert SearchEngine.open(index_dir).search("red", k=1)

    for folder in (paused_folder, contender_folder):
        if folder is not None:
            expected |= {p.name for p in folder.iterdir()}

    engine = SearchEngine.open(index_dir)
    catalog = {row["id"]: Path(row["path"]).name for row in engine.catalog.query("select id, path from images")}
    vectors = ShardSet.open(index_dir, engine.manifest)
    stored = sorted(int(i) for ids, _ in vectors.iter_vectors() for i in ids)
    assert set(catalog.values()) == expected and sorted(catalog) == stored  # every image once, with its vector
    hits = engine.search("red", k=len(expected) + 5)
    assert {Path(h.path).name for h in hits} == expected  # and every one of them is found


def test_bank_update_waits_for_an_index_run_then_is_refused_naming_it(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    writer = IndexWriter.open(index_dir)
    try:
        started = time.monotonic()
        waited = f"another `babelsearch index` run \\(pid {os.getpid()}\\) is writing .* after waiting 0.5 s"
        with pytest.raises(IndexBusy, match=waited):
            update_image_terms(index_dir, lock_wait=0.5)
        assert 0.5 <= time.monotonic() - started < 5
        with pytest.raises(IndexBusy, match=r"try again when it has finished \(--wait SECONDS waits for it\)"):
            update_image_terms(index_dir, lock_wait=0)
    finally:
        writer.close()
    assert update_image_terms(index_dir).texts  # and runs once the lock is free


def test_a_writer_that_waits_gets_the_lock_when_the_holder_closes(colour_folder: Path, tmp_path: Path):
    import threading

    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    held = acquire_lock(index_dir, "babelsearch index")  # as a writer in another process holds it
    timer = threading.Timer(0.5, release_lock, [held])
    timer.start()
    try:
        started = time.monotonic()
        assert update_image_terms(index_dir, lock_wait=60).texts
        assert 0.4 <= time.monotonic() - started < 30
    finally:
        timer.cancel()
