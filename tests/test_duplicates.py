"""Near-duplicates: collapse_hits folds a result list, duplicate_groups lists groups from the index's
nearest neighbours (flat and IVF), and ``babelsearch duplicates`` prints them; the pixel signature each
image gets at indexing decides between photos whose vectors agree (and old rows fall back to the cosine)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageEnhance

from babelsearch.cli import cli
from babelsearch.engine import InvalidQuery, SearchEngine
from babelsearch.engine.catalog import open_catalog, signatures_by_ids
from babelsearch.engine.duplicate_scan import duplicate_groups, group_rows
from babelsearch.engine.duplicates import (
    DUPLICATE_THRESHOLD,
    PIXEL_THRESHOLD,
    SIGNATURE_BYTES,
    collapse_hits,
    signature_matrix,
)
from babelsearch.engine.search import Hit
from babelsearch.indexer import IndexOptions, build_index, index_embeddings
from babelsearch.indexer.decode import Decoded, Failed, decode_image, pixel_signature
from babelsearch.indexer.ray_staging import Part, write_part

from .conftest import COLOURS, SHARED_SAMPLE, clustered_vectors, require_path, write_image

RULE = f"(signatures correlating >= {PIXEL_THRESHOLD:g}, else cosine >= {DUPLICATE_THRESHOLD:g})"


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
    ids = np.concatenate([ids for ids, _ in engine.shards.iter_vectors()])
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
    all_ids = np.concatenate([i for i, _ in engine.shards.iter_vectors()])
    vectors = engine.shards.vectors_for_ids(all_ids)
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

        def execute(self, sql, params=None):  # the catalog's reads select the id first
            cursor = self.db.execute(sql, params)
            return _Rows(cursor.description, [row for row in cursor if row[0] not in gone])

    engine._local.db = Catalog(engine.catalog)
    groups = duplicate_groups(engine)
    assert [ids[str(files["red"])]] not in groups and not gone & {i for g in groups for i in g}
    assert len(groups) == 1  # red0 has no near-duplicate left


class _Rows(list):
    """A read's rows with the cursor's column names, as the catalog reads them."""

    def __init__(self, description, rows):
        super().__init__(rows)
        self.description = description


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
    assert engine.shards.nlist == (16 if factory != "Flat" else 0)
    groups = duplicate_groups(engine)
    assert groups == truth  # ids are the rows here
    stored = engine.shards.vectors_for_ids(np.arange(len(vectors)))
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
    assert lines[0] == "group 1: 3 images" and lines[-1] == f"2 groups, 6 images {RULE}"
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
    assert (result.exit_code, result.output) == (0, f"no near-duplicates {RULE}\n")
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


# -- pixel signatures ------------------------------------------------------------------------------
MEAN = np.array([128, 96, 160], np.float32)  # the one mean colour of the pictures below


def diagonal(path: Path, size: tuple[int, int] = (96, 72), flip: bool = False) -> Path:
    """A diagonal light-to-dark ramp around MEAN: the mean colour of a solid MEAN picture, other pixels."""
    w, h = size
    ramp = (np.arange(w)[None, :] / (w - 1) + np.arange(h)[:, None] / (h - 1)) / 2 - 0.5  # -0.5 .. 0.5, mean 0
    if flip:
        ramp = ramp[:, ::-1]
    pixels = np.clip(MEAN + 120 * ramp[..., None], 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)
    return path


def solid(path: Path, size: tuple[int, int] = (96, 72)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(int(v) for v in MEAN)).save(path)
    return path


def signature_of(pixels: np.ndarray) -> bytes:
    return pixel_signature(Image.fromarray(pixels.astype(np.uint8), "RGB"))


@pytest.fixture(scope="module")
def same_colour(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """Three pictures of one mean colour (test-colours: one vector) - a solid one, a ramp and the ramp
    flipped - and a half-size, cropped, brighter JPEG copy of the ramp."""
    root = tmp_path_factory.mktemp("same-colour")
    photos = root / "photos"
    files = {
        "solid": solid(photos / "solid.png"),
        "ramp": diagonal(photos / "ramp.png"),
        "flipped": diagonal(photos / "flipped.png", flip=True),
    }
    files["copy"] = near_copy(files["ramp"], photos / "ramp-copy.jpg")
    build_index([photos], root / "index", model="test-colours", progress=False)
    engine = SearchEngine.open(root / "index")
    found = ids_by_path(engine)
    return root / "index", {name: found[str(path)] for name, path in files.items()}


def test_indexing_records_a_signature_per_image_kept_out_of_the_metadata(same_colour):
    index_dir, ids = same_colour
    engine = SearchEngine.open(index_dir)
    stored = signatures_by_ids(engine.catalog, ids.values())
    assert set(stored) == set(ids.values()) and {len(s) for s in stored.values()} == {SIGNATURE_BYTES}
    assert stored[ids["solid"]] == bytes(SIGNATURE_BYTES)  # one colour: the flat signature
    ramp = np.frombuffer(stored[ids["ramp"]], np.int8).reshape(16, 16).astype(int)
    assert ramp[0, 0] < -100 and ramp[-1, -1] > 100 and abs(ramp.sum()) < 256  # dark to light, mean removed
    # bytes for the duplicate test, not metadata: a hit, engine.get and the JSON API never carry them
    assert "signature" not in engine.get(ids["ramp"])


def test_the_signature_is_of_the_exif_rotated_image(tmp_path: Path):
    pixels = np.clip(MEAN + np.linspace(-100, 100, 80)[None, :, None] * np.ones((60, 1, 1)), 0, 255)
    upright = Image.fromarray(pixels.astype(np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: shown rotated 90 degrees clockwise
    upright.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    decoded = decode_image(tmp_path / "turned.jpg", short_side=32)
    assert isinstance(decoded, Decoded) and (decoded.width, decoded.height) == (60, 80)
    shown = np.frombuffer(decoded.signature, np.int8).reshape(16, 16)
    assert shown[0, 8] < -100 and shown[-1, 8] > 100  # the ramp runs top to bottom as shown
    pixels_of, _ = signature_matrix(
        [decoded.signature, pixel_signature(upright.transpose(Image.Transpose.ROTATE_270)), pixel_signature(upright)]
    )
    correlations = pixels_of @ pixels_of[0]
    assert correlations[1] > 0.99 and abs(correlations[2]) < 0.1  # as shown, not as stored


def test_a_copy_is_folded_and_other_pictures_of_the_same_colour_are_not(same_colour):
    index_dir, ids = same_colour
    engine = SearchEngine.open(index_dir)
    # the vectors alone cannot tell them apart: the same mean colour, cosine 1 (the copy is 8% brighter)
    vectors = engine.shards.vectors_for_ids(np.array(list(ids.values())))
    assert (vectors @ vectors.T).min() >= DUPLICATE_THRESHOLD
    assert duplicate_groups(engine) == [sorted([ids["ramp"], ids["copy"]])]
    hits = engine.search("red", k=4, collapse=True)
    kept = {hit.id: hit.similar or [] for hit in hits}
    assert len(hits) == 3 and not kept[ids["solid"]] and not kept[ids["flipped"]]
    (best,) = set(kept) & {ids["ramp"], ids["copy"]}  # the better ranked of the two holds the other
    assert {best, *kept[best]} == {ids["ramp"], ids["copy"]}


def test_collapse_hits_uses_the_signatures_where_both_hits_have_one():
    rng = np.random.default_rng(1)
    base = rng.normal(0, 40, (60, 80, 3)) + MEAN
    photo = signature_of(np.clip(base, 0, 255))
    copy = signature_of(np.clip(base * 1.08 + rng.normal(0, 3, base.shape), 0, 255))  # brighter, noisier
    other = signature_of(np.clip(rng.normal(0, 40, base.shape) + MEAN, 0, 255))
    flat = signature_of(np.broadcast_to(MEAN, base.shape))
    vectors = unit(0, 0.5)  # cosine 0.99996: one shot by the vectors alone

    def folds(a: bytes | None, b: bytes | None) -> bool:
        return len(collapse_hits(hits_for([1, 2]), vectors, DUPLICATE_THRESHOLD, 10, [a, b])) == 1

    assert folds(photo, copy) and not folds(photo, other)
    assert folds(photo, None) and folds(None, None)  # a hit without a signature: the cosine alone, as before
    assert folds(flat, flat) and not folds(flat, photo)  # two blank pictures: the cosine; blank vs a picture: no
    assert len(collapse_hits(hits_for([1, 2]), vectors, DUPLICATE_THRESHOLD, 10)) == 1  # no signatures given
    # pixels agree but the vectors are far apart (cosine 0.17 < VECTOR_FLOOR): not the same shot
    assert len(collapse_hits(hits_for([1, 2]), unit(0, 80), DUPLICATE_THRESHOLD, 10, [photo, photo])) == 2
    with pytest.raises(InvalidQuery, match="pixel_threshold"):
        collapse_hits(hits_for([1, 2]), vectors, DUPLICATE_THRESHOLD, 10, [photo, copy], pixel_threshold=2)
    with pytest.raises(ValueError, match="one signature"):
        collapse_hits(hits_for([1, 2]), vectors, DUPLICATE_THRESHOLD, 10, [photo])


def test_an_old_catalog_without_signatures_falls_back_to_the_cosine(same_colour, tmp_path: Path):
    import shutil

    index_dir, ids = same_colour
    old = tmp_path / "old-index"
    shutil.copytree(index_dir, old)
    with sqlite3.connect(old / "catalog.db") as db:  # as a catalog from before the column
        db.execute("alter table images drop column signature")
    engine = SearchEngine.open(old)
    assert signatures_by_ids(engine.catalog, ids.values()) == {}
    # cosine alone: all four share one colour, so they are one group and one hit, as before signatures
    assert duplicate_groups(engine) == [sorted(ids.values())]
    hits = engine.search("red", k=4, collapse=True)
    assert len(hits) == 1 and len(hits[0].similar) == 3
    # an index run adds the column: new images get a signature, the old rows have none (NULL)
    diagonal(tmp_path / "more" / "new.png", size=(50, 50))
    build_index([tmp_path / "more"], old, model="test-colours", progress=False)
    db = open_catalog(old, readonly=True)
    try:
        stored = signatures_by_ids(db, range(100))
    finally:
        db.close()
    assert len(stored) == 1 and not set(stored) & set(ids.values())


def test_ray_staging_keeps_the_signature(tmp_path: Path):
    signature = signature_of(np.clip(np.random.default_rng(2).normal(128, 40, (30, 40, 3)), 0, 255))
    results = [
        Decoded(Path("/a.jpg"), None, 10, 1.0, "aa", 40, 30, "jpeg", None, signature),
        Failed(Path("/b.jpg"), "broken"),
        Decoded(Path("/c.png"), None, 11, 2.0, "cc", 4, 3, "png", None, bytes(SIGNATURE_BYTES)),
        Decoded(Path("/d.png"), None, 12, 3.0, "dd", 4, 3, "png", None, None),
    ]
    key = {"model": "test-colours", "dim": "4"}
    write_part(tmp_path / "part.npz", np.arange(4), results, np.eye(3, 4, dtype=np.float32), key)
    part = Part(tmp_path / "part.npz")
    items = [part.item(row)[0] for row in range(4)]
    assert isinstance(items[1], Failed)
    signatures = [getattr(item, "signature", "failed") for item in items]
    assert signatures == [signature, "failed", bytes(256), None]  # all-zero bytes kept whole
    # a part staged by an older version has no signatures: None, not an error
    with np.load(tmp_path / "part.npz") as data:
        older = {k: data[k] for k in data.files if k not in ("signature", "has_signature")}
    np.savez(tmp_path / "older.npz", **older)
    assert Part(tmp_path / "older.npz").item(0)[0].signature is None


def test_the_api_and_client_list_the_groups(colour_index: Path):
    from babelsearch.webui import create_app
    from babelsearch.webui.client import Client

    from .conftest import live_server

    engine = SearchEngine.open(colour_index, model="test-colours")
    expected = [
        [{"id": row["id"], "path": row["path"]} for row in group]
        for group in group_rows(engine, duplicate_groups(engine))
    ]
    assert expected  # three near-identical photos of each colour
    client = create_app({"INDEX_DIR": colour_index}).test_client()
    payload = client.get("/api/duplicates").get_json()
    assert payload == {"total": len(expected), "groups": expected}
    assert client.get("/api/duplicates?limit=1").get_json()["groups"] == expected[:1]
    bad = client.get("/api/duplicates?limit=0")
    assert bad.status_code == 400 and "limit" in bad.get_json()["error"]["message"]
    with live_server({"INDEX_DIR": colour_index}) as url:
        assert Client(url).duplicates(limit=2) == expected[:2]
