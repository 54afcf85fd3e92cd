"""Near-duplicates: collapse_hits folds a result list, duplicate_groups lists groups from the index's
nearest neighbours (flat and IVF), and ``babelsearch duplicates`` prints them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from babelsearch.cli import cli
from babelsearch.engine import InvalidQuery, SearchEngine
from babelsearch.engine.duplicates import DUPLICATE_THRESHOLD, collapse_hits, duplicate_groups, group_rows
from babelsearch.engine.search import Hit
from babelsearch.indexer import IndexOptions, build_index, index_embeddings

from .conftest import COLOURS, SHARED_SAMPLE, clustered_vectors, require_path, write_image


def near_copy(source: Path, target: Path) -> Path:
    """What a photo library collects twice: half the size, 5% cropped off each edge, 8% brighter, JPEG 60."""
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    dx, dy = round(image.width * 0.05), round(image.height * 0.05)
    image = image.crop((dx, dy, image.width - dx, image.height - dy))
    image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    ImageEnhance.Brightness(image).enhance(1.08).save(target, format="JPEG", quality=60)
    return target


def brute_force_groups(ids: np.ndarray, vectors: np.ndarray, threshold: float) -> list[list[int]]:
    """Every pair compared: the groups duplicate_groups must find from its neighbours alone."""
    close = vectors @ vectors.T >= threshold
    groups: list[set[int]] = []
    for i, j in zip(*np.nonzero(np.triu(close, 1))):
        pair = {int(ids[i]), int(ids[j])}
        joined = [g for g in groups if g & pair]
        groups = [g for g in groups if not g & pair] + [pair.union(*joined)]
    return sorted((sorted(g) for g in groups), key=lambda g: (-len(g), g[0]))


# -- collapse_hits ---------------------------------------------------------------------------------
def unit(*angles_deg: float) -> np.ndarray:
    radians = np.radians(angles_deg)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def hits_for(ids: list[int]) -> list[Hit]:
    return [Hit(id=i, path=f"/p/{i}.jpg", score=1.0 - n / 10) for n, i in enumerate(ids)]


def test_collapse_folds_each_hit_into_the_better_ranked_one_it_duplicates():
    # ranks: A, A' (2 degrees from A), B (60), A'' (1), C (120), B' (61)
    hits = hits_for([10, 11, 20, 12, 30, 21])
    vectors = unit(0, 2, 60, 1, 120, 61)
    kept = collapse_hits(hits, vectors, threshold=0.99, k=10)
    assert [h.id for h in kept] == [10, 20, 30]
    assert [h.similar for h in kept] == [[11, 12], [21], []]
    assert [h.score for h in kept] == [hits[0].score, hits[2].score, hits[4].score]  # the kept hits as they were
    assert not any(h.similar for h in hits)  # the given hits are left alone
    # a lower threshold folds B into A; C stays (120 degrees), and B' (61) joins C, the closer kept hit
    assert [(h.id, h.similar) for h in collapse_hits(hits, vectors, 0.4, 10)] == [(10, [11, 20, 12]), (30, [21])]
    assert [h.id for h in collapse_hits(hits, vectors, 0.99999, 10)] == [10, 11, 20, 12, 30, 21]


def test_collapse_keeps_at_most_k_and_still_counts_later_duplicates():
    hits = hits_for([10, 20, 30, 11, 21, 31])
    kept = collapse_hits(hits, unit(0, 60, 120, 1, 61, 121), threshold=0.99, k=2)
    # C (30) is a third distinct hit: dropped; A' and B' (after it) still fold into A and B; C' is dropped too
    assert [(h.id, h.similar) for h in kept] == [(10, [11]), (20, [21])]


def test_collapse_joins_the_closest_kept_hit_and_carries_folded_lists():
    # X (25 degrees from A, 15 from B) is a duplicate of both at cos >= 0.9: it joins B, the closer one
    hits = hits_for([1, 2, 3])
    hits[2].similar = [7, 8]  # X already stands for two others (collapsed before)
    kept = collapse_hits(hits, unit(0, 40, 25), threshold=0.9, k=5)
    assert [(h.id, h.similar) for h in kept] == [(1, []), (2, [3, 7, 8])]
    # vectors of any length: cosines, not dot products
    kept = collapse_hits(hits_for([1, 2]), unit(0, 1) * np.array([[3.0], [0.2]], np.float32), 0.99, 5)
    assert [(h.id, h.similar) for h in kept] == [(1, [2])]
    assert collapse_hits([], np.zeros((0, 2), np.float32), 0.9, 5) == []


@pytest.mark.parametrize("threshold", [0, -0.5, 1.01, float("nan"), "high", None, True])
def test_collapse_refuses_a_threshold_outside_0_1(threshold):
    with pytest.raises(InvalidQuery, match="threshold"):
        collapse_hits(hits_for([1, 2]), unit(0, 1), threshold, 5)


def test_collapse_refuses_bad_k_and_misaligned_vectors():
    with pytest.raises(InvalidQuery, match="k must"):
        collapse_hits(hits_for([1, 2]), unit(0, 1), 0.9, 0)
    with pytest.raises(ValueError, match="one vector per hit"):
        collapse_hits(hits_for([1, 2, 3]), unit(0, 1), 0.9, 5)


# -- duplicate_groups on a flat index (test-colours: the mean colour is the vector) ------------------
@pytest.fixture(scope="module")
def colour_duplicates(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """Four distinct colours; red has two near-copies of one photo, green a copy of one and another
    photo of the same colour (a burst: identical colours give identical vectors)."""
    root = tmp_path_factory.mktemp("duplicates")
    photos = root / "photos"
    (photos / "copies").mkdir(parents=True)
    files = {
        name: write_image(photos / f"{name}0.png", rgb, size=(80, 60), noise_seed=n)
        for n, (name, rgb) in enumerate(COLOURS.items())
    }
    files["red-copy"] = near_copy(files["red"], photos / "copies" / "red0-small.jpg")
    files["red-copy2"] = near_copy(files["red"], photos / "copies" / "red0\nagain.jpg")  # a newline in the name
    files["green-copy"] = near_copy(files["green"], photos / "copies" / "green0-small.jpg")
    files["green-burst"] = write_image(photos / "green1.png", COLOURS["green"], size=(80, 60), noise_seed=9)
    build_index([photos], root / "index", model="test-colours", progress=False)
    return root / "index", files


def ids_by_path(engine: SearchEngine) -> dict[str, int]:
    ids = np.concatenate([ids for ids, _ in engine._shards.iter_vectors()])
    return {engine.get(int(i))["path"]: int(i) for i in ids}


def test_duplicate_groups_on_a_flat_index(colour_duplicates):
    index_dir, files = colour_duplicates
    engine = SearchEngine.open(index_dir)
    ids = ids_by_path(engine)
    red = sorted(ids[str(files[n])] for n in ("red", "red-copy", "red-copy2"))
    green = sorted(ids[str(files[n])] for n in ("green", "green-copy", "green-burst"))
    groups = duplicate_groups(engine)
    # largest first, ties by the lowest id; each group ascending; blue and yellow (no copies) left out
    assert groups == sorted([red, green], key=lambda g: (-len(g), g[0]))
    all_ids = np.concatenate([i for i, _ in engine._shards.iter_vectors()])
    vectors = engine._shards.vectors_for_ids(all_ids)
    assert groups == brute_force_groups(all_ids, vectors, DUPLICATE_THRESHOLD)
    # a low enough threshold joins every colour through chains of neighbours: one group of all eight
    assert duplicate_groups(engine, threshold=0.1) == [sorted(ids.values())]
    # the catalog rows, for the CLI and the web page, in the same order
    assert [[row["id"] for row in group] for group in group_rows(engine, groups)] == groups
    with pytest.raises(InvalidQuery, match="threshold"):
        duplicate_groups(engine, threshold=1.5)


def test_a_vector_whose_catalog_row_is_gone_is_left_out(colour_duplicates):
    index_dir, files = colour_duplicates
    engine = SearchEngine.open(index_dir)
    ids = ids_by_path(engine)
    gone = {ids[str(files["red-copy"])], ids[str(files["red-copy2"])]}

    class Catalog:  # the catalog as an interrupted write can leave it: vectors without their rows
        def __init__(self, db):
            self.db = db

        def query(self, sql, params):
            return (row for row in self.db.query(sql, params) if row["id"] not in gone)

    engine._local.db = Catalog(engine._catalog)
    groups = duplicate_groups(engine)
    assert [ids[str(files["red"])]] not in groups and not gone & {i for g in groups for i in g}
    assert len(groups) == 1  # red0 has no near-duplicate left


# -- duplicate_groups on an IVF-PQ index (precomputed vectors with planted near-copies) -------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[np.ndarray, list[list[int]]]:
    """1200 clustered vectors; 20 of them get one near-copy, 5 of those a second (cosine ~0.9995)."""
    rng = np.random.default_rng(3)
    base = clustered_vectors(1200, dim=32, seed=4)
    extra, groups = [], []
    for n, row in enumerate(rng.choice(1200, 20, replace=False).tolist()):
        group = [row]
        for _ in range(2 if n < 5 else 1):
            copy = base[row] + rng.normal(0, 0.005, 32).astype(np.float32)
            extra.append(copy / np.linalg.norm(copy))
            group.append(1200 + len(extra) - 1)
        groups.append(group)
    vectors = np.concatenate([base, np.array(extra, np.float32)])
    return vectors, sorted((sorted(g) for g in groups), key=lambda g: (-len(g), g[0]))


@pytest.fixture
def one_faiss_thread() -> Iterator[None]:
    """faiss' OpenMP team on a busy 2-core machine spins against the other jobs: one thread trains and
    tunes this small IVF index in 3 s instead of 35 (the count is restored afterwards)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


@pytest.mark.parametrize("factory", ["Flat", "IVF16,PQ8"])
def test_duplicate_groups_find_planted_near_copies(planted, factory, tmp_path: Path, one_faiss_thread):
    vectors, truth = planted
    np.save(tmp_path / "vectors.npy", vectors)
    index_dir = tmp_path / "index"
    index_embeddings(tmp_path / "vectors.npy", index_dir, options=IndexOptions(index_factory=factory, shard_size=500))
    engine = SearchEngine.open(index_dir)
    assert engine._shards.nlist == (16 if factory != "Flat" else 0)
    groups = duplicate_groups(engine)
    assert groups == truth  # ids are the rows here
    stored = engine._shards.vectors_for_ids(np.arange(len(vectors)))
    assert groups == brute_force_groups(np.arange(len(vectors)), stored, DUPLICATE_THRESHOLD)


# -- the command line ----------------------------------------------------------------------------
def test_cli_lists_groups_as_text_and_json(colour_duplicates):
    index_dir, files = colour_duplicates
    engine = SearchEngine.open(index_dir)
    groups = group_rows(engine, duplicate_groups(engine))
    runner = CliRunner()
    result = runner.invoke(cli, ["duplicates", str(index_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "group 1: 3 images" and lines[-1] == f"2 groups, 6 images (cosine >= {DUPLICATE_THRESHOLD:g})"
    assert len(lines) == 1 + 3 + 1 + 3 + 1  # one line per image: the newline in a name is shown escaped
    shown = [line.split(None, 1) for line in lines if line.startswith("  ")]
    assert [int(i) for i, _ in shown] == [row["id"] for group in groups for row in group]
    assert str(files["red-copy2"]).replace("\n", "\\n") in [path for _, path in shown]

    result = runner.invoke(cli, ["duplicates", str(index_dir), "--json", "--threshold", "0.1"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert len(payload) == 1 and len(payload[0]) == 8 and set(payload[0][0]) == {"id", "path"}
    assert {entry["path"] for entry in payload[0]} == {str(path) for path in files.values()}  # the real names


def test_cli_says_when_there_are_no_near_duplicates(tmp_path: Path):
    for n, colour in enumerate(("red", "blue")):
        write_image(tmp_path / "photos" / f"{colour}.png", COLOURS[colour], noise_seed=n)
    build_index([tmp_path / "photos"], tmp_path / "index", model="test-colours", progress=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["duplicates", str(tmp_path / "index")])
    assert (result.exit_code, result.output) == (0, f"no near-duplicates (cosine >= {DUPLICATE_THRESHOLD:g})\n")
    result = runner.invoke(cli, ["duplicates", str(tmp_path / "index"), "--json"])
    assert (result.exit_code, json.loads(result.output)) == (0, [])


@pytest.mark.parametrize("threshold", ["0", "1.5", "-1", "nan"])
def test_cli_refuses_a_threshold_outside_0_1_in_one_line(colour_duplicates, threshold):
    index_dir, _ = colour_duplicates
    result = CliRunner().invoke(cli, ["duplicates", str(index_dir), "--threshold", threshold])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: threshold must be a cosine in (0, 1], got {float(threshold)}"
    ]


def test_cli_names_a_missing_index_in_one_line(tmp_path: Path):
    result = CliRunner().invoke(cli, ["duplicates", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("Error: no index at")


# -- the real model on shared photos ---------------------------------------------------------------
def test_real_near_copies_of_shared_photos_are_grouped(tmp_path: Path, babel_lite):
    """babel-lite: a brighter JPEG copy of three shared photos joins its original; a different photo does not."""
    images = require_path(SHARED_SAMPLE / "images", "../shared/data/imagenet-sample")
    # photos whose brighter copy the measurement (scripts/duplicate_threshold.py) put far above the threshold
    photos = tmp_path / "photos"
    photos.mkdir()
    chosen = ["n04476259", "n02111129", "n02007558", "n04254680"]  # tray, Leonberger, flamingo; soccer ball
    for stem in chosen[:3]:
        original = photos / f"{stem}.jpg"
        original.write_bytes((images / f"{stem}.jpg").read_bytes())
        with Image.open(original) as opened:
            ImageEnhance.Brightness(opened.convert("RGB")).enhance(1.08).save(photos / f"{stem}-copy.jpg", quality=60)
    (photos / f"{chosen[3]}.jpg").write_bytes((images / f"{chosen[3]}.jpg").read_bytes())
    build_index([photos], tmp_path / "index", encoder=babel_lite, progress=False)
    engine = SearchEngine.open(tmp_path / "index", encoder=babel_lite)
    named = [sorted(Path(row["path"]).name for row in group) for group in group_rows(engine, duplicate_groups(engine))]
    assert sorted(named) == sorted([f"{stem}-copy.jpg", f"{stem}.jpg"] for stem in chosen[:3])
