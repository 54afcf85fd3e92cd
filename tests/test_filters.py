"""Filters (Where): folder, date taken, size, orientation, type; exact among few, IDSelector among many."""

from __future__ import annotations

import csv
import io
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from babelsearch.cli import cli
from babelsearch.engine import InvalidQuery, SearchEngine
from babelsearch.engine.filters import Where
from babelsearch.engine.options import SearchOptions
from babelsearch.indexer import IndexOptions, build_index, index_embeddings

from .conftest import COLOURS, clustered_vectors, exact_top_k, write_image


def _exif_jpeg(path: Path, rgb, taken: str | None, size=(64, 48)) -> Path:
    image = Image.new("RGB", size, rgb)
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[0x9003] = taken
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", exif=exif.tobytes())
    return path


@pytest.fixture(scope="module")
def photo_index(tmp_path_factory) -> tuple[Path, Path]:
    """Red photos in three folders, of known dates (EXIF or mtime), sizes and types."""
    root = tmp_path_factory.mktemp("filters")
    photos = root / "photos"
    red = COLOURS["red"]
    _exif_jpeg(photos / "2023" / "summer" / "a.jpg", red, "2023:07:14 18:03:59")
    _exif_jpeg(photos / "2024" / "summer" / "b.jpg", red, "2024:07:01 09:00:00")
    _exif_jpeg(photos / "2024" / "winter" / "c.jpg", red, "2024:12:24 20:00:00", size=(48, 64))
    # no EXIF date: the file's mtime decides (2022-03-05 local time)
    plain = write_image(photos / "2024" / "winter" / "d.png", red, size=(50, 50))
    stamp = time.mktime((2022, 3, 5, 12, 0, 0, 0, 0, -1))
    os.utime(plain, (stamp, stamp))
    from pillow_heif import register_heif_opener

    register_heif_opener()
    (photos / "phone").mkdir()
    Image.new("RGB", (80, 40), red).save(photos / "phone" / "e.heic")
    Image.new("RGB", (40, 80), red).save(photos / "phone" / "f.avif")
    build_index([photos], root / "index", model="test-colours", progress=False)
    return root / "index", photos.resolve()


def names(hits) -> list[str]:
    return sorted(Path(hit.path).name for hit in hits)


def search(index: Path, **where) -> list[str]:
    engine = SearchEngine.open(index, model="test-colours")
    return names(engine.search("red", k=20, where=Where(**where)))


def test_catalog_records_date_source_type_and_shown_size(photo_index):
    index, _ = photo_index
    engine = SearchEngine.open(index, model="test-colours")
    rows = {Path(hit.path).name: hit.metadata for hit in engine.search("red", k=20)}
    assert rows["a.jpg"]["taken_at"] == "2023-07-14T18:03:59" and rows["a.jpg"]["taken_from"] == "exif"
    assert rows["d.png"]["taken_at"] == "2022-03-05T12:00:00" and rows["d.png"]["taken_from"] == "mtime"
    assert {name: row["format"] for name, row in rows.items()} == {
        "a.jpg": "jpeg",
        "b.jpg": "jpeg",
        "c.jpg": "jpeg",
        "d.png": "png",
        "e.heic": "heif",
        "f.avif": "avif",
    }
    assert (rows["e.heic"]["width"], rows["e.heic"]["height"]) == (80, 40)


def test_folders_absolute_relative_and_excluded(photo_index):
    index, photos = photo_index
    assert search(index, folders=(str(photos / "2024"),)) == ["b.jpg", "c.jpg", "d.png"]
    # a relative name matches that folder anywhere, never a mere prefix of a name ("2024/w" is not "winter")
    assert search(index, folders=("summer",)) == ["a.jpg", "b.jpg"]
    assert search(index, folders=("2024/w",)) == []
    assert search(index, folders=("summer", "phone")) == ["a.jpg", "b.jpg", "e.heic", "f.avif"]
    assert search(index, exclude_folders=("2024", "phone")) == ["a.jpg"]
    # the folder's own path with a trailing slash means the same; a sibling sharing its prefix does not match
    assert search(index, folders=(str(photos / "2024") + "/",)) == ["b.jpg", "c.jpg", "d.png"]
    assert search(index, folders=(str(photos / "202"),)) == []


def test_dates_after_inclusive_before_exclusive(photo_index):
    index, _ = photo_index
    assert search(index, after="2024-07-01", before="2024-12-24") == ["b.jpg"]
    # e.heic and f.avif carry no EXIF date: their mtime (just now) is after too
    assert search(index, after="2024-07-01T09:00:01") == ["c.jpg", "e.heic", "f.avif"]
    assert "d.png" in search(index, before="2023-01-01") and "a.jpg" not in search(index, before="2023-01-01")
    assert search(index, after="2023-07-14", before="2023-07-15") == ["a.jpg"]


def test_size_orientation_and_type(photo_index):
    index, _ = photo_index
    assert search(index, orientation="portrait") == ["c.jpg", "f.avif"]
    assert search(index, orientation="square") == ["d.png"]
    assert search(index, orientation="landscape") == ["a.jpg", "b.jpg", "e.heic"]
    assert search(index, min_width=70) == ["e.heic"]
    assert search(index, min_height=60) == ["c.jpg", "f.avif"]
    assert search(index, types=("heic", "png")) == ["d.png", "e.heic"]
    assert search(index, types=("jpg",), orientation="portrait") == ["c.jpg"]


def test_bad_filters_are_clear_errors():
    for bad, message in [
        ({"after": "2024-13-01"}, "not a real date"),
        ({"after": "yesterday"}, "must be a date"),
        ({"after": "2024-02-01", "before": "2024-01-01"}, "must be earlier"),
        ({"orientation": "diagonal"}, "orientation must be one of"),
        ({"types": ("exe",)}, "type must be among"),
        ({"min_width": 0}, "min_width"),
        ({"folders": ("a\x00b",)}, "not a folder path"),
    ]:
        with pytest.raises(InvalidQuery, match=message):
            Where(**bad)
    with pytest.raises(InvalidQuery, match="where must be a Where"):
        SearchOptions(where={"folder": "x"})  # type: ignore[arg-type]


def test_from_values_reads_repeated_request_values():
    from werkzeug.datastructures import MultiDict

    values = MultiDict(
        [("folder", "a"), ("folder", " b/ "), ("exclude", "c"), ("type", "JPG"), ("min_width", "10"), ("after", "")]
    )
    where = Where.from_values(values)
    assert where == Where(folders=("a", "b"), exclude_folders=("c",), types=("jpeg",), min_width=10)
    assert where.to_json() == {"folder": ["a", "b"], "exclude": ["c"], "min_width": 10, "type": ["jpeg"]}
    assert Where.from_values(MultiDict([("q", "cat"), ("folder", "")])) is None
    assert SearchOptions.from_values(values).where == where


def test_cli_filters(photo_index):
    index, photos = photo_index
    runner = CliRunner()
    result = runner.invoke(cli, ["search", str(index), "red", "--type", "heic", "--type", "avif", "--json"])
    assert result.exit_code == 0, result.output
    assert result.output.count('"path"') == 2 and '"filters"' in result.output
    # a folder that exists here is its full path, so a relative one on the command line works as typed
    cwd = os.getcwd()
    try:
        os.chdir(photos)
        result = runner.invoke(cli, ["search", str(index), "red", "--folder", "2024/winter"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert "c.jpg" in result.output and "d.png" in result.output and "a.jpg" not in result.output
    result = runner.invoke(cli, ["search", str(index), "red", "--before", "2024-99-01"])
    assert result.exit_code != 0 and "not a real date" in result.output and "Traceback" not in result.output


def test_an_older_catalog_is_upgraded_without_losing_anything(tmp_path):
    photos = tmp_path / "photos"
    for n, (name, rgb) in enumerate(COLOURS.items()):
        write_image(photos / f"{name}.jpg", rgb, noise_seed=n)
    build_index([photos], tmp_path / "index", model="test-colours", progress=False)
    with sqlite3.connect(tmp_path / "index" / "catalog.db") as db:
        for column in ("taken_at", "taken_from", "format"):
            db.execute(f"alter table images drop column {column}")
    engine = SearchEngine.open(tmp_path / "index", model="test-colours")
    # read as it is: dates from the mtime; a type is unknown until an index run records it
    assert len(engine.search("red", k=10, where=Where(after="2000-01-01"))) == 4
    assert engine.search("red", k=10, where=Where(types=("jpeg",))) == []
    write_image(photos / "more.png", COLOURS["red"], noise_seed=9)
    report = build_index([photos], tmp_path / "index", model="test-colours", progress=False)
    assert report.indexed == 1
    engine = SearchEngine.open(tmp_path / "index", model="test-colours")
    assert len(engine.search("red", k=10)) == 5
    assert names(engine.search("red", k=10, where=Where(types=("jpeg",)))) == sorted(f"{n}.jpg" for n in COLOURS)


@pytest.fixture(scope="module")
def ivf_folders(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """3000 vectors in IVF-PQ shards, in 100 folders: folder f holds the ids i with i % 100 == f."""
    root = tmp_path_factory.mktemp("ivf-filters")
    x = clustered_vectors(3000, dim=32, seed=3)
    np.save(root / "base.npy", x)
    with open(root / "meta.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "path"])
        writer.writerows([i, f"/photos/{i % 100:02d}/{i}.jpg"] for i in range(len(x)))
    options = IndexOptions(index_factory="IVF32,PQ8", shard_size=1000)
    index_embeddings(root / "base.npy", root / "index", root / "meta.csv", options=options)
    queries = clustered_vectors(20, dim=32, seed=4)
    return root / "index", x, queries


def test_a_selective_filter_finds_k_exact_hits_among_few(ivf_folders):
    index, x, queries = ivf_folders
    engine = SearchEngine.open(index)
    allowed = np.arange(7, len(x), 100)  # folder 07: 30 of 3000 (1%)
    hits = engine.search_vectors(queries, k=10, nprobe=1, where=Where(folders=("/photos/07",)))
    truth = exact_top_k(x[allowed], queries, 10, ids=allowed)
    found = [[h.id for h in row] for row in hits]
    assert all(len(row) == 10 and all(i % 100 == 7 for i in row) for row in found)
    # exact among the allowed: only float16 storage can swap neighbours at the 10th place
    assert np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth.tolist())]) >= 0.98


def test_a_broad_filter_scans_with_a_selector_and_keeps_recall(ivf_folders):
    index, x, queries = ivf_folders
    engine = SearchEngine.open(index)
    where = Where(exclude_folders=("/photos/07", "/photos/42"))
    allowed = np.array([i for i in range(len(x)) if i % 100 not in (7, 42)])
    hits = engine.search_vectors(queries, k=10, where=where)
    found = [[h.id for h in row] for row in hits]
    assert all(len(row) == 10 and all(i % 100 not in (7, 42) for i in row) for row in found)
    truth = exact_top_k(x[allowed], queries, 10, ids=allowed)
    unfiltered = [[h.id for h in row] for row in engine.search_vectors(queries, k=10)]
    recall_filtered = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth.tolist())])
    recall_plain = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(unfiltered, exact_top_k(x, queries, 10))])
    assert recall_filtered >= recall_plain - 0.05


def test_a_filter_matching_little_in_many_lists_still_fills_k(ivf_folders):
    index, x, queries = ivf_folders
    engine = SearchEngine.open(index)
    # 40 folders of 100 (1200 ids, 40%): through the selector, nprobe=1 finds fewer than 10 for some
    # queries, so nprobe grows and, if needed, every list is scanned
    where = Where(folders=tuple(f"/photos/{f:02d}" for f in range(40)))
    hits = engine.search_vectors(queries, k=10, nprobe=1, refine_factor=1, where=where)
    assert all(len(row) == 10 for row in hits)
    assert all(int(Path(h.path).parent.name) < 40 for row in hits for h in row)


def test_min_score_cuts_and_an_empty_filter_returns_nothing(photo_index):
    index, _ = photo_index
    engine = SearchEngine.open(index, model="test-colours")
    hits = engine.search("red", k=20, rerank="none")
    cut = hits[2].score
    kept = engine.search("red", k=20, rerank="none", min_score=cut)
    assert [h.id for h in kept] == [h.id for h in hits if h.score >= cut] and len(kept) >= 3
    assert engine.search("red", k=5, where=Where(folders=("no-such-folder",))) == []
    with pytest.raises(InvalidQuery, match="min_score"):
        SearchOptions(min_score=float("nan"))
    assert SearchOptions(min_score=100).min_score == 100.0 and SearchOptions(min_score=-100).min_score == -100.0
    with pytest.raises(InvalidQuery, match="from -100 to 100"):
        SearchOptions(min_score=100.5)
    assert SearchOptions.from_values({"min_score": " 0.25 ", "collapse": "ON"}) == SearchOptions(
        min_score=0.25, collapse=True
    )
    with pytest.raises(InvalidQuery, match="collapse must be true or false"):
        SearchOptions.from_values({"collapse": "maybe"})
    with pytest.raises(InvalidQuery, match="k \\+ offset must be at most 1000, got 1005"):
        engine.search_page("red", k=1000, offset=5)


def test_image_queries_take_filters(photo_index):
    index, photos = photo_index
    engine = SearchEngine.open(index, model="test-colours")
    first = engine.search("red", k=1)[0]
    similar = engine.similar(first.id, k=10, where=Where(types=("avif", "heif")))
    assert names(similar) == sorted({"e.heic", "f.avif"} - {Path(first.path).name})
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), COLOURS["red"]).save(buffer, "PNG")
    image = Image.open(buffer)
    assert names(engine.search_image(image, k=10, where=Where(folders=("summer",)))) == ["a.jpg", "b.jpg"]


def test_heic_and_avif_are_thumbnailed_and_served(photo_index):
    from babelsearch.webui import create_app

    index, _ = photo_index
    client = create_app({"INDEX_DIR": index}).test_client()
    engine = SearchEngine.open(index, model="test-colours")
    for hit in engine.search("red", k=10, where=Where(types=("heif", "avif"))):
        thumb = client.get(f"/images/{hit.id}/thumb")
        assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
        assert Image.open(io.BytesIO(thumb.data)).size[0] > 0
        served = client.get(f"/images/{hit.id}/file")
        assert served.status_code == 200 and served.data == Path(hit.path).read_bytes()
        assert served.mimetype in ("image/heic", "image/heif", "image/avif")


def test_a_broad_filter_that_comes_up_short_scans_every_list(ivf_folders, monkeypatch):
    import babelsearch.engine.candidates as candidates_module

    index, x, queries = ivf_folders
    monkeypatch.setattr(candidates_module, "EXACT_FILTER_MAX", 0)  # through the selector, however few match
    engine = SearchEngine.open(index)
    # 20% allowed and nprobe 1: the scaled nprobe (5 of 32 lists) holds fewer than 100 of them for a
    # query, so every list is scanned and each query still gets its 100
    where = Where(folders=tuple(f"/photos/{f:02d}" for f in range(20)))
    hits = engine.search_vectors(queries, k=100, nprobe=1, refine_factor=1, rerank="none", where=where)
    assert all(len(row) == 100 for row in hits)
    assert all(int(Path(h.path).parent.name) < 20 for row in hits for h in row)


def test_more_like_this_gives_k_others_for_odd_k(photo_index):
    index, _ = photo_index
    engine = SearchEngine.open(index, model="test-colours")
    first = engine.search("red", k=1)[0]
    for k in (1, 3, 5):
        similar = engine.similar(first.id, k=k)
        assert len(similar) == k and first.id not in [hit.id for hit in similar]
