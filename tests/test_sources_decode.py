import os
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from babelsearch.cli import cli
from babelsearch.engine import SourceError
from babelsearch.indexer import collect_images
from babelsearch.indexer.decode import Decoded, Failed, decode_image

from .conftest import write_image


def test_folder_walk_is_recursive_and_filters_extensions(colour_folder: Path):
    (colour_folder / "notes.txt").write_text("not an image")
    (colour_folder / ".hidden.jpg").write_bytes(b"")
    found = collect_images([colour_folder])
    assert len(found) == 8
    assert all(p.is_absolute() for p in found)
    assert {p.suffix for p in found} == {".jpg", ".png", ".webp", ".bmp"}


def test_path_lists_txt_and_csv_resolve_relative_to_the_list(colour_folder: Path, tmp_path: Path):
    (colour_folder / "list.txt").write_text("# a comment\nred0.jpg\n\nnested/red1.png\n")
    (tmp_path / "list.csv").write_text("id,path\n1,photos/green0.webp\n2,photos/red0.jpg\n")
    found = collect_images([colour_folder / "list.txt", tmp_path / "list.csv"])
    # red0 appears in both lists and is kept once
    assert [p.name for p in found] == ["red0.jpg", "red1.png", "green0.webp"]


def test_missing_or_unknown_source_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SourceError, match="does not exist"):
        collect_images([tmp_path / "nope"])
    with pytest.raises(SourceError, match="~no-such-user-here/photos does not exist"):  # not RuntimeError
        collect_images(["~no-such-user-here/photos"])
    (tmp_path / "list.txt").write_text("~no-such-user-here/a.jpg\n")
    (listed,) = collect_images([tmp_path / "list.txt"])  # reported by the decoder as a missing file
    assert listed.name == "a.jpg" and not listed.exists()
    odd = tmp_path / "file.xyz"
    odd.write_text("x")
    with pytest.raises(SourceError, match="neither a folder"):
        collect_images([odd])


def test_decode_applies_exif_orientation_and_reports_original_size(tmp_path: Path):
    image = Image.new("RGB", (80, 40), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 40, 40))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    decoded = decode_image(path)
    assert isinstance(decoded, Decoded)
    assert decoded.image.size == (40, 80) and (decoded.width, decoded.height) == (40, 80)
    top = decoded.image.getpixel((20, 5))
    assert top[2] > 200 and top[0] < 60  # the blue half is now on top
    assert len(decoded.sha256) == 64 and decoded.bytes == path.stat().st_size


def test_decode_reduces_to_the_requested_shorter_side(tmp_path: Path):
    path = write_image(tmp_path / "big.jpg", (10, 200, 10), size=(1200, 900))
    decoded = decode_image(path, short_side=256)
    assert min(decoded.image.size) == 256 and decoded.image.size == (341, 256)
    assert (decoded.width, decoded.height) == (1200, 900)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_decode_converts_any_mode_to_rgb(tmp_path: Path, mode: str):
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    path = tmp_path / f"img.{fmt.lower()}"
    write_image(path, (100, 150, 200), mode=mode, fmt=fmt)
    decoded = decode_image(path)
    assert isinstance(decoded, Decoded) and decoded.image.mode == "RGB"


def test_transparent_areas_become_white(tmp_path: Path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (10, 10), (0, 0, 0, 0)).save(path)
    assert decode_image(path).image.getpixel((5, 5)) == (255, 255, 255)


def test_broken_files_fail_with_a_reason(tmp_path: Path):
    truncated = write_image(tmp_path / "cut.jpg", (1, 2, 3), size=(200, 200))
    truncated.write_bytes(truncated.read_bytes()[:300])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    results = [decode_image(p) for p in (truncated, garbage, empty, tmp_path / "gone.jpg")]
    assert all(isinstance(r, Failed) for r in results)
    assert "not a readable image" in results[1].reason
    assert results[2].reason == "empty file"
    assert "No such file" in results[3].reason


def test_one_pixel_guard_ours_not_pillows(tmp_path: Path, monkeypatch):
    from PIL import Image as PILImage

    from babelsearch.engine import InvalidImage, images

    # scaled down: Pillow's own guard stricter than ours, as its default (89 M) is below MAX_PIXELS (250 M)
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1_000)
    # 9,800 pixels and 100 rows of 2 pixels' weight (images.ROW_PIXELS): 10,000, at the limit
    under = write_image(tmp_path / "under.png", (10, 20, 30), size=(98, 100))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a warning for an image under our limit
        decoded = decode_image(under)
        assert isinstance(decoded, Decoded) and decoded.image.size == (98, 100)
        assert images.open_image(under.read_bytes()).size == (98, 100)
    assert decode_image(write_image(tmp_path / "row.png", (1, 2, 3), size=(99, 100))).reason.startswith("image too")
    assert PILImage.MAX_IMAGE_PIXELS == 10_000  # raised to ours, so that Pillow's guard still stands
    over = write_image(tmp_path / "over.png", (10, 20, 30), size=(101, 100))
    with pytest.warns(PILImage.DecompressionBombWarning):  # Pillow's, for an image we refuse anyway
        assert decode_image(over).reason == "image too large (101x100 pixels)"
    bomb = write_image(tmp_path / "bomb.png", (10, 20, 30), size=(400, 400))  # past Pillow's error, 2x
    assert decode_image(bomb).reason.startswith("image too large")
    with pytest.raises(InvalidImage, match="too large"):
        images.open_image(bomb)


def test_pillows_guard_is_never_lowered_or_disabled(tmp_path: Path, monkeypatch):
    from PIL import Image as PILImage

    from babelsearch.engine import images

    path = write_image(tmp_path / "small.png", (10, 20, 30))
    for limit in (10**12, None):
        monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", limit)
        images.open_image(path)
        assert limit == PILImage.MAX_IMAGE_PIXELS


def test_decode_in_threads_reports_sizes_and_reasons(tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    paths = [write_image(tmp_path / f"{i}.jpg", (i * 20, 100, 50), size=(300 + i, 200)) for i in range(8)]
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: decode_image(p, short_side=64), [*paths, tmp_path / "bad.jpg"]))
    assert [(r.width, r.height) for r in results[:8]] == [(300 + i, 200) for i in range(8)]
    assert all(min(r.image.size) == 64 for r in results[:8]) and isinstance(results[8], Failed)


def test_path_lists_keep_names_that_are_not_utf8_byte_for_byte(tmp_path: Path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.jpg"  # Latin-1 from an old disk
    write_image(Path(os.fsdecode(raw)), (10, 20, 30))
    (tmp_path / "list.txt").write_bytes(raw + b"\n")
    (found,) = collect_images([tmp_path / "list.txt"])
    assert os.fsencode(found) == raw and isinstance(decode_image(found), Decoded)


@pytest.mark.parametrize(
    "content, looks",
    [
        (None, "a JPEG image"),  # a photo renamed, or passed where its list was meant
        (bytes(range(256)) * 16, "binary data"),
        ("a.jpg\nb.jpg\n".encode("utf-16-le"), "UTF-16 text without a byte-order mark"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "a PNG image"),
    ],
)
def test_a_path_list_that_is_not_text_is_refused_in_one_line(tmp_path: Path, content, looks):
    listed = tmp_path / "list.txt"
    listed.write_bytes(content if content is not None else write_image(tmp_path / "p.jpg", (1, 2, 3)).read_bytes())
    with pytest.raises(SourceError, match=f"path list .*list.txt is not a text file: it looks like {looks}"):
        collect_images([listed])
    result = CliRunner().invoke(cli, ["index", str(listed), "--index", str(tmp_path / "index"), "-q"])
    assert result.exit_code == 1 and "Error: path list" in result.output and "indexed" not in result.output
    assert "Traceback" not in result.output and not (tmp_path / "index").exists()


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "utf-8-sig"])
def test_a_path_list_with_a_byte_order_mark_is_read_in_its_encoding(colour_folder: Path, codec: str):
    (colour_folder / "list.txt").write_bytes("red0.jpg\r\nnested/red1.png\n".encode(codec))
    assert [p.name for p in collect_images([colour_folder / "list.txt"])] == ["red0.jpg", "red1.png"]


def test_links_resolve_to_their_file_but_broken_ones_keep_their_own_name(tmp_path: Path):
    target = write_image(tmp_path / "photos" / "real.png", (1, 2, 3))
    (tmp_path / "photos" / "alias.png").symlink_to(target)  # the same file twice: listed once
    (tmp_path / "photos" / "broken.png").symlink_to(tmp_path / "nowhere.png")
    found = collect_images([tmp_path / "photos"])
    assert found == [target.resolve(), tmp_path / "photos" / "broken.png"]  # alias.png, broken.png, real.png
    failed = decode_image(found[1])
    assert isinstance(failed, Failed) and failed.path.name == "broken.png" and "broken link" in failed.reason


def test_unknown_formats_give_a_reason_without_object_reprs(tmp_path: Path):
    from babelsearch.engine import InvalidImage, images

    path = tmp_path / "x.png"
    path.write_bytes(b"GIF89a but not really")
    reason = decode_image(path).reason
    assert reason.startswith("not a readable image") and " at 0x" not in reason
    with pytest.raises(InvalidImage) as caught:
        images.open_image(b"\x00" * 100)
    assert "BytesIO" not in str(caught.value)
    assert images.describe_error(ValueError("cannot read <_io.BytesIO object at 0x7f00>")) == "ValueError: cannot read"


def test_a_path_that_is_not_a_regular_file_is_refused_by_the_opener(tmp_path: Path):
    from babelsearch.engine import InvalidImage, images

    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(InvalidImage, match="named pipe"):
        images.open_image(tmp_path / "pipe.jpg")  # the thumbnailer's way in: it must not block either
    with pytest.raises(InvalidImage, match="a folder"):
        images.open_image(tmp_path)
