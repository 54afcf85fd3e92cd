from pathlib import Path

import pytest
from PIL import Image

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
