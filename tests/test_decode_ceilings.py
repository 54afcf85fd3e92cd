"""What decoding an image costs is known from its header, before a pixel is decoded: strangers' requests
(uploads, thumbnails) are held to a ceiling on it (413 with the reason), and the indexer decodes big JPEGs
reduced whatever the model says about its size."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from babelsearch.engine import SearchEngine
from babelsearch.engine.errors import ImageTooLarge
from babelsearch.engine.images import ROW_PIXELS, decode_pixels, open_photo
from babelsearch.indexer import build_index
from babelsearch.indexer.decode import UNSIZED_MODEL_SIDE, Decoded, decode_image
from babelsearch.webui import create_app

from .conftest import write_image


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` and whose pixel data is one empty block: refused
    for its size, it says the header alone was read (decoding it would fail as damaged instead)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def jpeg_bytes(size: tuple[int, int], progressive: bool = False) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="JPEG", quality=70, progressive=progressive)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Image.open here, on a 144 MP header
def test_decode_cost_counts_a_baseline_jpeg_at_its_reduced_size_and_anything_else_whole():
    baseline, progressive = jpeg_bytes((2400, 1800)), jpeg_bytes((2400, 1800), progressive=True)
    rows = ROW_PIXELS  # what each row's pointer weighs, in pixels
    assert decode_pixels(opened(baseline), 256) == 600 * 450 + rows * 450  # 1/8 would be 225 < 256
    assert decode_pixels(opened(baseline), 200) == 300 * 225 + rows * 225
    assert decode_pixels(opened(baseline), 512) == 1200 * 900 + rows * 900  # 1/2
    assert decode_pixels(opened(baseline), None) == 2400 * 1800 + rows * 1800
    assert decode_pixels(opened(progressive), 200) == 2400 * 1800 + rows * 1800  # every coefficient held
    assert decode_pixels(opened(png_header_only(12000, 12000)), 200) == 144_000_000 + rows * 12000
    # a thin image is all rows: 1 x 50 million pixels weighs 600 MB in Pillow, three times its pixels
    assert decode_pixels(opened(png_header_only(1, 50_000_000))) == 150_000_000


def test_the_ceiling_is_checked_from_the_header_before_decoding():
    with pytest.raises(ImageTooLarge, match=r"12000x12000 PNG \(144 megapixels\); at most 50 megapixels"):
        open_photo(png_header_only(12000, 12000), reduce_to=512, max_decode_pixels=50_000_000)
    photo = open_photo(jpeg_bytes((2400, 1800)), reduce_to=256, max_decode_pixels=300_000)  # costs 270,900
    assert (photo.width, photo.height) == (2400, 1800) and photo.image.size == (600, 450)
    with pytest.raises(ImageTooLarge, match="progressive JPEG"):
        open_photo(jpeg_bytes((2400, 1800), progressive=True), reduce_to=256, max_decode_pixels=300_000)
    with pytest.raises(ImageTooLarge, match="1x30000000 PNG"):  # 30 megapixels, but 90 by what it weighs
        open_photo(png_header_only(1, 30_000_000), reduce_to=256, max_decode_pixels=50_000_000)


@pytest.fixture
def app(colour_index: Path):
    app = create_app({"INDEX_DIR": colour_index, "TESTING": True})
    return app


def upload(client, data: bytes, name: str):
    form = {"image": (io.BytesIO(data), name)}
    return client.post("/api/search/image", data=form, content_type="multipart/form-data")


def test_an_upload_over_the_ceiling_is_refused_with_413_and_the_reason(app):
    client = app.test_client()
    response = upload(client, png_header_only(12000, 12000), "bomb.png")  # a few hundred bytes on the wire
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "image_too_large" and "12000x12000" in error["message"]
    # a baseline JPEG of the same size would be decoded at 1/8: its cost, not its size, is what counts
    app.config["MAX_DECODE_PIXELS"] = 1_500_000  # the baseline JPEG costs 1,081,800 (1/2), the progressive 4,323,600
    assert upload(client, jpeg_bytes((2400, 1800)), "big.jpg").status_code == 200
    assert upload(client, jpeg_bytes((2400, 1800), progressive=True), "big.jpg").status_code == 413
    page = client.post("/search/image", data={"image": (io.BytesIO(png_header_only(9000, 9000)), "b.png")})
    assert page.status_code == 413 and b"9000x9000" in page.data  # the browser's page says it too


def test_a_thumbnail_too_costly_to_decode_is_refused_not_rendered(tmp_path: Path):
    photos = tmp_path / "photos"
    write_image(photos / "wide.png", (10, 200, 10), size=(900, 700))
    (photos / "big.jpg").write_bytes(jpeg_bytes((2400, 1800)))
    build_index([photos], tmp_path / "index", model="test-colours")
    app = create_app({"INDEX_DIR": tmp_path / "index", "MAX_DECODE_PIXELS": 300_000, "THUMB_DIR": False})
    client = app.test_client()
    engine = SearchEngine.open(tmp_path / "index")
    by_name = {Path(row["path"]).name: row["id"] for row in engine.catalog.query("select id, path from images")}
    response = client.get(f"/images/{by_name['wide.png']}/thumb")
    assert response.status_code == 413 and "900x700 PNG" in response.get_json()["error"]["message"]
    thumb = client.get(f"/images/{by_name['big.jpg']}/thumb?size=256")  # decoded at 1/4: 600x450
    assert thumb.status_code == 200 and opened(thumb.data).size == (256, 192)


def test_an_encoder_without_a_size_still_gets_big_jpegs_decoded_reduced(tmp_path: Path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes((6000, 4500)))
    decoded = decode_image(path)  # no short_side: an encoder that does not declare what it looks at
    assert isinstance(decoded, Decoded) and (decoded.width, decoded.height) == (6000, 4500)
    assert decoded.image.size == (1500, 1125)  # 1/4: the largest scale keeping UNSIZED_MODEL_SIDE
    assert min(decoded.image.size) >= UNSIZED_MODEL_SIDE
