"""Issue 14, damaged indexes: `search`, `info`, `serve` and `index` answer with one "damaged" line naming
the file and the way out; manifest paths stay inside the index; `info --check` lists every problem;
`index --repair` makes a damaged index whole again."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from babelsearch.cli import cli
from babelsearch.engine import IncompatibleIndex, SearchEngine
from babelsearch.engine.check import check_index
from babelsearch.engine.errors import IndexDamaged
from babelsearch.engine.layout import read_manifest
from babelsearch.indexer import IndexOptions, build_index

from .conftest import COLOURS, write_image

N_PHOTOS = 24


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """(photos, index) of 24 photos in four shards, built once; tests damage copies of it."""
    root = tmp_path_factory.mktemp("damaged")
    colours = list(COLOURS.values())
    for i in range(N_PHOTOS):
        write_image(root / "photos" / f"p{i:02d}.png", colours[i % 4], noise_seed=i)
    build_index([root / "photos"], root / "index", model="test-colours", options=IndexOptions(shard_size=6))
    return root / "photos", root / "index"


@pytest.fixture
def copy(built, tmp_path: Path) -> tuple[Path, Path]:
    photos, index = built
    shutil.copytree(index, tmp_path / "index")
    return photos, tmp_path / "index"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def shard(index_dir: Path, n: int = 1) -> dict:
    return json.loads((index_dir / "manifest.json").read_text())["shards"][n]


def garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(max(path.stat().st_size, 64)))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(index_dir: Path) -> None:
        data = json.loads((index_dir / "manifest.json").read_text())
        change(data)
        (index_dir / "manifest.json").write_text(json.dumps(data))

    return edit


# damage -> (the file the message names, whether `index --repair` is the way out)
DAMAGES: dict[str, tuple[Callable[[Path], None], Callable[[Path], str], bool]] = {
    "catalog overwritten": (lambda d: garbage(d / "catalog.db"), lambda d: "catalog.db", True),
    "catalog truncated": (lambda d: truncate(d / "catalog.db"), lambda d: "catalog.db", True),
    "catalog empty": (lambda d: (d / "catalog.db").write_bytes(b""), lambda d: "catalog.db", True),
    "catalog missing": (lambda d: (d / "catalog.db").unlink(), lambda d: "catalog.db", True),
    "shard garbage": (lambda d: garbage(d / shard(d)["file"]), lambda d: shard(d)["file"], True),
    "shard truncated": (lambda d: truncate(d / shard(d)["file"]), lambda d: shard(d)["file"], True),
    "shard missing": (lambda d: (d / shard(d)["file"]).unlink(), lambda d: shard(d)["file"], True),
    "ids garbage": (lambda d: garbage(d / shard(d)["ids"]), lambda d: shard(d)["ids"], True),
    "ids of another shape": (lambda d: np.save(d / shard(d)["ids"], np.arange(3.0)), lambda d: shard(d)["ids"], True),
    "vectors truncated": (lambda d: truncate(d / shard(d)["vectors"]), lambda d: shard(d)["vectors"], True),
    "manifest names /etc/passwd": (
        edit_manifest(lambda m: m["shards"][0].update(file="/etc/passwd")),
        lambda d: "manifest.json",
        False,
    ),
    "manifest names ../": (
        edit_manifest(lambda m: m["shards"][0].update(ids="../../../../etc/passwd")),
        lambda d: "manifest.json",
        False,
    ),
    "manifest garbage": (lambda d: (d / "manifest.json").write_text("{not json"), lambda d: "manifest.json", False),
}


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.mark.parametrize("damage", DAMAGES)
def test_every_command_answers_a_damaged_index_with_one_line(copy, damage: str, monkeypatch):
    photos, index_dir = copy
    do, named, repairable = DAMAGES[damage]
    name = named(index_dir)
    do(index_dir)

    import waitress

    def never(*args, **kwargs):
        raise AssertionError("serve got as far as starting a server on a damaged index")

    monkeypatch.setattr(waitress, "create_server", never)
    for args in (
        ("search", index_dir, "red"),
        ("info", index_dir),
        ("serve", index_dir, "--port", 0),
        ("index", photos, "--index", index_dir, "-q"),
    ):
        line = one_error_line(invoke(*args))
        assert "damaged" in line and name in line, (args, line)
        if repairable:
            assert f"--index {index_dir} --repair" in line, line
        else:
            assert "rebuild the index" in line, line


@pytest.mark.parametrize("damage", DAMAGES)
def test_info_check_lists_the_problem_and_index_repair_makes_it_whole(copy, damage: str):
    photos, index_dir = copy
    do, named, repairable = DAMAGES[damage]
    name = named(index_dir)
    do(index_dir)
    result = invoke("info", index_dir, "--check")
    assert result.exit_code == 1
    problems = [line for line in result.output.splitlines() if line.startswith("problem:")]
    assert problems and any(name in p for p in problems), result.output
    payload = json.loads(invoke("info", index_dir, "--check", "--json").stdout)
    assert payload["ok"] is False and payload["problems"]
    if not repairable:
        return
    result = invoke("index", photos, "--index", index_dir, "-q", "--repair")
    assert result.exit_code == 0, result.output
    assert "repaired:" in result.output
    report = check_index(index_dir)
    assert report.ok and not report.warnings and report.images == N_PHOTOS == report.vectors
    engine = SearchEngine.open(index_dir)
    assert {Path(hit.path).name for hit in engine.search("red", k=100, rerank="none")} == {
        p.name for p in photos.iterdir()
    }


def test_info_check_passes_a_sound_index(copy):
    _, index_dir = copy
    result = invoke("info", index_dir, "--check")
    assert result.exit_code == 0 and result.output.startswith("ok: "), result.output
    assert f"{N_PHOTOS} images, {N_PHOTOS} vectors in 4 shards" in result.output
    assert json.loads(invoke("info", index_dir, "--check", "--json").output)["ok"] is True


def test_info_check_finds_what_opening_does_not(copy):
    """Deep checks (ids of a shard vs its id file, rows without vectors, duplicates) are --check's."""
    _, index_dir = copy
    first, second = shard(index_dir, 0), shard(index_dir, 1)
    shutil.copy(index_dir / first["ids"], index_dir / second["ids"])  # right shape, wrong ids
    SearchEngine.open(index_dir)  # opening reads headers only: it does not see this
    report = check_index(index_dir)
    problems = " | ".join(report.problems)
    assert f"{second['file']} holds other ids than {second['ids']}" in problems
    assert "ids are in more than one shard" in problems
    assert "catalog rows have no vector" in problems


def test_manifest_paths_never_reach_faiss_or_numpy_outside_the_index(copy, monkeypatch):
    import faiss

    _, index_dir = copy
    opened: list[str] = []
    real_read = faiss.read_index
    monkeypatch.setattr(faiss, "read_index", lambda path, *a: opened.append(str(path)) or real_read(path, *a))
    edit_manifest(lambda m: m["shards"][2].update(file="shards/../../outside.faiss"))(index_dir)
    with pytest.raises(IndexDamaged, match="not inside the index directory"):
        SearchEngine.open(index_dir)
    with pytest.raises(IndexDamaged):
        read_manifest(index_dir)
    assert opened == []  # refused when the manifest is read, before any shard is opened
    assert issubclass(IndexDamaged, IncompatibleIndex)  # callers that caught IncompatibleIndex still do


def test_index_on_a_missing_shard_says_how_to_recover(copy):
    photos, index_dir = copy
    (index_dir / shard(index_dir, 3)["vectors"]).unlink()
    with pytest.raises(IndexDamaged) as caught:
        build_index([photos], index_dir)
    message = str(caught.value)
    assert "is missing" in message and "--repair" in message and "info" in message and "--check" in message
    report = build_index([photos], index_dir, options=IndexOptions(repair=True))
    assert report.indexed == 6 and report.unchanged == N_PHOTOS - 6
    assert any(note.startswith("repaired: dropped 1 damaged shards") for note in report.notes)


def test_repair_sets_a_damaged_catalog_aside(copy):
    photos, index_dir = copy
    garbage(index_dir / "catalog.db")
    report = build_index([photos], index_dir, options=IndexOptions(repair=True))
    assert report.indexed == N_PHOTOS
    assert [p.name.startswith("catalog.db.damaged-") for p in index_dir.iterdir() if "damaged" in p.name] == [True]
    assert check_index(index_dir).ok
