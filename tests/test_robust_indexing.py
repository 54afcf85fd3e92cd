"""Issue 14, indexing half: one bad entry never stops or endangers a run; faults end in one clear line and
leave the previous index searchable; a run killed anywhere is repaired by the next one."""

from __future__ import annotations

import ast
import errno
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from babelsearch.cli import cli
from babelsearch.engine import SearchEngine
from babelsearch.engine.catalog import display_path
from babelsearch.engine.check import check_index
from babelsearch.engine.errors import InvalidImage
from babelsearch.indexer import IndexOptions, build_index
from babelsearch.indexer.decode import Decoded, Failed, decode_image
from babelsearch.indexer.files import DEBUG_KILL_ENV

from .conftest import COLOURS, clustered_vectors, write_image

ROOT = Path(__file__).resolve().parent.parent
# the CLI in a fresh process, with the tests' stand-in models registered (tests.conftest does that)
CLI = "import sys, tests.conftest; from babelsearch.cli import main; sys.argv[0] = 'babelsearch'; main()"


def run_cli(*args, env: dict | None = None, file_size_limit: int | None = None, timeout: float = 120):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-c", CLI, *map(str, args)],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != DEBUG_KILL_ENV}, **(env or {})},
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
        preexec_fn=limit if file_size_limit else None,
    )


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def colour_photos(folder: Path, n: int, start: int = 0) -> list[Path]:
    colours = list(COLOURS.values())
    return [write_image(folder / f"p{i:03d}.png", colours[i % 4], noise_seed=i) for i in range(start, start + n)]


# -- names ----------------------------------------------------------------------------------------
def test_a_name_that_is_not_utf8_is_indexed_losslessly_and_shown_escaped(tmp_path: Path):
    photos = tmp_path / "photos"
    raw = os.fsencode(photos) + b"/old\xff\xfe.png"
    odd = Path(os.fsdecode(raw))  # what os.walk gives: surrogate escapes for the undecodable bytes
    write_image(odd, COLOURS["blue"], noise_seed=1)
    write_image(photos / "two\nlines\x1b[31m.png", COLOURS["blue"], noise_seed=2)
    write_image(photos / "plain.png", COLOURS["red"], noise_seed=3)
    index_dir = tmp_path / "index"

    report = build_index([photos], index_dir, model="test-colours")
    assert (report.indexed, len(report.skipped)) == (3, 0)
    engine = SearchEngine.open(index_dir)
    hits = engine.search("blue", k=2)
    paths = {os.fsencode(hit.path) for hit in hits}
    assert raw in paths  # byte for byte
    row = engine.get(next(h.id for h in hits if os.fsencode(h.path) == raw))
    assert Path(row["path"]).read_bytes() == odd.read_bytes()  # the web layer's row["path"] opens the file

    assert build_index([photos], index_dir).unchanged == 3  # re-runs work, and find it unchanged
    assert check_index(index_dir).ok

    result = invoke("search", index_dir, "blue", "--k", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 3  # a newline in a name does not split its hit
    assert any(line.endswith("old\\xff\\xfe.png") for line in lines)
    assert any(line.endswith("two\\nlines\\x1b[31m.png") for line in lines)
    assert "\x1b" not in result.output

    payload = json.loads(invoke("search", index_dir, "blue", "--json").output)
    assert raw in {os.fsencode(hit["path"]) for hit in payload["results"]}  # JSON keeps it too

    odd.unlink()
    assert build_index([photos], index_dir).removed == 1


def test_display_path_escapes_what_a_terminal_acts_on():
    assert display_path("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert display_path("\x1b[2J\x07\x7f\x9b") == "\\x1b[2J\\x07\\x7f\\x9b"
    assert display_path("evil\u202etxt.jpg") == "evil\\u202etxt.jpg"  # a bidi override
    assert display_path(os.fsdecode(b"\xff\xfe")) == "\\xff\\xfe"
    assert display_path("Straße/猫 ракета.jpg") == "Straße/猫 ракета.jpg"  # text is left alone


def test_cli_index_shows_skipped_names_escaped(tmp_path: Path):
    photos = tmp_path / "photos"
    colour_photos(photos, 2)
    (photos / "bad\nname\x1b[1m.jpg").write_bytes(b"not an image")
    result = invoke("index", photos, "--index", tmp_path / "index", "--model", "test-colours", "-q")
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.output.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and "bad\\nname\\x1b[1m.jpg" in skipped[0]


# -- what is read ---------------------------------------------------------------------------------
def _build_in_subprocess(photos: Path, index_dir: Path, timeout: float = 60) -> dict:
    """build_index in its own process, so that a hang fails the test instead of stopping the suite."""
    code = textwrap.dedent(
        f"""
        import json, tests.conftest
        from babelsearch.indexer import build_index
        report = build_index([{str(photos)!r}], {str(index_dir)!r}, model="test-colours")
        print(json.dumps({{"indexed": report.indexed, "removed": report.removed,
                          "skipped": {{p.path.name: p.reason for p in report.skipped}}}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fifos_and_links_to_devices_are_skipped_not_read(tmp_path: Path):
    photos = tmp_path / "photos"
    colour_photos(photos, 2)
    os.mkfifo(photos / "pipe.jpg")  # opened for reading, it would block until a writer came: forever
    (photos / "zero.jpg").symlink_to("/dev/zero")  # read, it would fill the memory
    report = _build_in_subprocess(photos, tmp_path / "index")
    assert report["indexed"] == 2
    assert "named pipe (FIFO)" in report["skipped"]["pipe.jpg"]
    assert "a link to /dev/zero, a character device" in report["skipped"]["zero.jpg"]
    assert all("only regular files are read" in reason for reason in report["skipped"].values())


def test_an_indexed_file_replaced_by_a_fifo_does_not_hang_the_next_run(tmp_path: Path):
    photos = tmp_path / "photos"
    first, _ = colour_photos(photos, 2)
    build_index([photos], tmp_path / "index", model="test-colours")
    first.unlink()
    os.mkfifo(first)  # known to the catalog: the run must not hash it to see whether it changed
    report = _build_in_subprocess(photos, tmp_path / "index")
    assert report["removed"] == 0 and "named pipe" in report["skipped"][first.name]
    assert SearchEngine.open(tmp_path / "index").count == 1  # what it was is no longer in the index


def test_files_over_the_size_limit_are_skipped_with_the_reason(tmp_path: Path):
    photos = tmp_path / "photos"
    colour_photos(photos, 2)
    big = write_image(photos / "big.png", COLOURS["red"], size=(300, 300), noise_seed=7)
    report = build_index(
        [photos], tmp_path / "index", model="test-colours", options=IndexOptions(max_file_bytes=20_000)
    )
    assert report.indexed == 2
    assert [(f.path.name, f.reason) for f in report.skipped] == [
        (big.name, f"larger than the limit of 20,000 bytes ({big.stat().st_size:,} bytes)")
    ]
    # the CLI's --max-file-mb, in MiB
    (photos / "huge.jpg").write_bytes(os.urandom((1 << 20) + 1))
    result = invoke(
        "index", photos, "--index", tmp_path / "cli-index", "--model", "test-colours", "-q", "--max-file-mb", 1
    )
    assert (
        result.exit_code == 0
        and "skipped" in result.output
        and "huge.jpg: larger than the limit of 1 MiB" in result.output
    )


def test_skip_reasons_are_for_people_and_a_broken_link_is_named_as_itself(tmp_path: Path):
    photos = tmp_path / "photos"
    colour_photos(photos, 1)
    (photos / "garbage.png").write_bytes(b"\x89PNG not really" + bytes(range(256)))
    (photos / "text.jpg").write_text("hello")
    (photos / "dangling.jpg").symlink_to(tmp_path / "gone" / "target.jpg")
    report = build_index([photos], tmp_path / "index", model="test-colours")
    reasons = {f.path.name: f.reason for f in report.skipped}
    assert set(reasons) == {"garbage.png", "text.jpg", "dangling.jpg"}  # the link under its own name
    assert reasons["dangling.jpg"] == f"a broken link (to {tmp_path / 'gone' / 'target.jpg'}, which does not exist)"
    for reason in reasons.values():
        assert "object at 0x" not in reason and "BytesIO" not in reason, reason
    assert reasons["text.jpg"].startswith("not a readable image")


def test_no_warnings_catch_warnings_on_the_decode_path():
    # warnings.catch_warnings() swaps process-wide state: unsafe in decode worker threads
    for module in (
        "engine/images.py",
        "indexer/decode.py",
        "webui/thumbs.py",
        "indexer/pipeline.py",
        "indexer/build.py",
    ):
        tree = ast.parse((ROOT / module).read_text("utf-8"))
        calls = [
            node for node in ast.walk(tree) if isinstance(node, ast.Call) and "catch_warnings" in ast.unparse(node.func)
        ]
        assert not calls, module


def test_images_in_a_folder_that_cannot_be_read_are_kept_not_removed(monkeypatch, tmp_path: Path):
    from babelsearch.indexer import build

    real_lstat = os.lstat

    def lstat(path, *args, **kwargs):
        if "locked" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    assert build._is_gone(str(tmp_path / "gone.png"))  # known not to exist
    assert not build._is_gone(str(tmp_path / "locked" / "a.png"))  # unknown: kept


# -- thin images ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 4000), (10000, 10)])
def test_thin_images_are_bounded_by_the_crop_the_model_keeps(tmp_path: Path, size, monkeypatch):
    from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder
    from babelsearch.webui.thumbs import render_thumbnail

    path = tmp_path / "thin.png"
    Image.new("RGB", size, (200, 30, 30)).save(path)
    assert path.stat().st_size < 2_000  # a few hundred bytes
    decoded = decode_image(path, short_side=256)
    assert isinstance(decoded, Decoded) and (decoded.width, decoded.height) == size
    assert sorted(decoded.image.size) == [256, 4096]  # not 256 x 1,024,000

    resized: list[tuple[int, int]] = []
    original = Image.Image.resize
    monkeypatch.setattr(
        Image.Image, "resize", lambda self, s, *a, **k: resized.append(tuple(s)) or original(self, s, *a, **k)
    )
    # the upload path and the encoder's own crop, given the image at its original size
    image = Image.open(path).convert("RGB")
    crop = BabelLiteEncoder.crop(image)
    assert crop.shape == (224, 224, 3) and tuple(crop[112, 112]) == (200, 30, 30)
    assert resized and max(w * h for w, h in resized) <= 256 * 4096
    thumbnail = Image.open(__import__("io").BytesIO(render_thumbnail(path, 256)))
    assert max(thumbnail.size) == 256


def test_thin_images_cost_megabytes_not_gigabytes(tmp_path: Path):
    code = textwrap.dedent(
        f"""
        import resource
        from PIL import Image
        from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder
        from babelsearch.engine.images import open_image
        from babelsearch.indexer.decode import decode_image
        Image.new("RGB", (1, 4000), (9, 9, 9)).save({str(tmp_path / "tall.png")!r})
        Image.new("RGB", (10000, 10), (9, 9, 9)).save({str(tmp_path / "wide.png")!r})
        Image.new("RGB", (1, 2000), (9, 9, 9)).save({str(tmp_path / "upload.png")!r})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for name in ("tall", "wide"):
            BabelLiteEncoder.crop(decode_image({str(tmp_path)!r} + f"/{{name}}.png", short_side=256).image)
        data = open({str(tmp_path / "upload.png")!r}, "rb").read()
        BabelLiteEncoder.crop(open_image(data, reduce_to=512))  # what /api/search/image does with an upload
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert int(done.stdout.strip()) < 100  # MB; it was 400-1200 before the bound


def test_the_bound_leaves_photos_alone_and_thin_crops_as_they_were():
    from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder

    rng = np.random.default_rng(0)
    for size in [(640, 480), (3000, 200), (3, 300), (300, 5)]:  # a photo, a panorama, thin strips
        image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        scale = 256 / min(size)
        whole = image.resize((max(256, round(size[0] * scale)), max(256, round(size[1] * scale))), Image.BILINEAR)
        left, top = (whole.width - 224) // 2, (whole.height - 224) // 2
        expected = np.asarray(whole.crop((left, top, left + 224, top + 224)))
        assert np.array_equal(BabelLiteEncoder.crop(image), expected), size


# -- the decoder never raises: property-based ----------------------------------------------------
def _image_bytes(fmt: str, size=(40, 30)) -> bytes:
    import io

    buffer = io.BytesIO()
    write = Image.new("RGB", size, (10, 200, 30))
    write.save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = {fmt: _image_bytes(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@st.composite
def image_like_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "mutated", "truncated", "header"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "header":  # a valid header claiming any size, then far too little data
        return _png_header(draw(st.integers(1, 1 << 20)), draw(st.integers(1, 1 << 20)))
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    if kind == "truncated":
        return bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.mark.filterwarnings("ignore")  # Pillow warns about much of this data; the property is the outcome
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=image_like_bytes())
def test_the_decoder_returns_decoded_or_a_reason_for_any_bytes(tmp_path: Path, data: bytes):
    from unittest import mock

    from babelsearch.engine import images

    path = tmp_path / "fuzz.img"
    path.write_bytes(data)
    # a lower pixel cap keeps each example's memory small; the property is the same at any cap
    with mock.patch.object(images, "MAX_PIXELS", 4_000_000):
        result = decode_image(path, short_side=64)
        assert isinstance(result, (Decoded, Failed))
        if isinstance(result, Decoded):
            assert result.image.mode == "RGB" and min(result.image.size) == 64
            assert max(result.image.size) <= 64 * images.MAX_ASPECT  # bounded, whatever the shape
        else:
            assert result.reason and "object at 0x" not in result.reason
        try:
            images.open_image(data, reduce_to=64)
        except InvalidImage:
            pass


# -- faults: a clear line, a usable index ---------------------------------------------------------
@pytest.fixture(scope="module")
def vector_files(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """1000 vectors indexed first, then 3000 (the same 1000 and 2000 more) added by a run that fails."""
    folder = tmp_path_factory.mktemp("fault-vectors")
    x = clustered_vectors(3000, dim=32, seed=3)
    np.save(folder / "first.npy", x[:1000])
    np.save(folder / "all.npy", x)
    return folder / "first.npy", folder / "all.npy", x


def _index_vectors(vectors: Path, index_dir: Path, **kw):
    return run_cli("index", "-q", "--embeddings", vectors, "--index", index_dir, "--shard-size", 500, **kw)


def _assert_one_line_and_still_searchable(done, index_dir: Path, x: np.ndarray, reason: str) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and reason in errors[0] and str(index_dir) in errors[0], done.stderr
    assert "nothing already indexed is lost" in errors[0]
    report = check_index(index_dir)
    assert report.ok, report.problems
    # the committed manifest names no vector whose catalog row was not committed
    assert not [w for w in report.warnings if "have no catalog row" in w], report.warnings
    engine = SearchEngine.open(index_dir)
    assert engine.count >= 1000  # everything of the previous run, perhaps a committed shard more
    assert [row[0].id for row in engine.search_vectors(x[:1000:111], k=1)] == list(range(0, 1000, 111))


@pytest.mark.parametrize(
    "limit, failing",
    [(20_000, "shards/00002.faiss"), (100_000, "catalog.db")],  # the shard file / the catalog's next page
)
def test_a_file_size_limit_ends_in_one_line_and_the_index_still_searches(
    vector_files, tmp_path: Path, limit: int, failing: str
):
    first, everything, x = vector_files
    index_dir = tmp_path / "index"
    assert _index_vectors(first, index_dir).returncode == 0
    done = _index_vectors(everything, index_dir, file_size_limit=limit)  # as under `ulimit -f`
    if failing == "catalog.db":
        # its rollback failed under the same limit: readers roll the hot journal back when they open
        assert Path(f"{index_dir / 'catalog.db'}-journal").stat().st_size > 0
    _assert_one_line_and_still_searchable(done, index_dir, x, os.strerror(errno.EFBIG) if "faiss" in failing else "")
    assert failing in done.stderr
    resumed = _index_vectors(everything, index_dir)
    assert resumed.returncode == 0, resumed.stderr
    report = check_index(index_dir)
    assert report.ok and not report.warnings and report.images == 3000 == report.vectors


def test_catalog_rows_that_fail_to_be_written_leave_no_committed_vector_without_a_row(tmp_path: Path, monkeypatch):
    """The disk fills while a run writes catalog rows: the manifest it committed before names only
    vectors whose rows are committed (rows are written first, the manifest is the commit point)."""
    from babelsearch.indexer import index_embeddings, writer

    vectors = clustered_vectors(60, 16, seed=3)
    np.save(tmp_path / "vectors.npy", vectors)
    index_dir = tmp_path / "index"
    real_insert, calls = writer.insert_images, []

    def disk_full_on_the_third_shard(db, rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(index_dir / "catalog.db"))
        return real_insert(db, rows)

    monkeypatch.setattr(writer, "insert_images", disk_full_on_the_third_shard)
    with pytest.raises(OSError, match=os.strerror(errno.ENOSPC)):
        index_embeddings(tmp_path / "vectors.npy", index_dir, options=IndexOptions(shard_size=20))
    monkeypatch.undo()
    report = check_index(index_dir)
    assert report.ok and not report.warnings[1:], (report.problems, report.warnings)
    assert report.vectors == report.images == 40  # two shards committed, with their rows; the third not
    assert not [w for w in report.warnings if "have no catalog row" in w]
    assert SearchEngine.open(index_dir).count == 40
    index_embeddings(
        tmp_path / "vectors.npy", index_dir, options=IndexOptions(shard_size=20)
    )  # the next run completes it
    report = check_index(index_dir)
    assert report.ok and not report.warnings and report.vectors == report.images == 60


def test_rows_of_vectors_a_run_never_committed_are_a_warning_and_the_next_run_redoes_them(tmp_path: Path, monkeypatch):
    from babelsearch.indexer import index_embeddings, writer

    vectors = clustered_vectors(60, 16, seed=4)
    np.save(tmp_path / "vectors.npy", vectors)
    index_dir = tmp_path / "index"
    real_commit, calls = writer.IndexWriter.commit, []

    def crash_before_the_third_manifest(self, shards, old):
        calls.append(1)
        if len(calls) == 3:  # the third shard's rows are written, its manifest not
            raise KeyboardInterrupt
        return real_commit(self, shards, old)

    monkeypatch.setattr(writer.IndexWriter, "commit", crash_before_the_third_manifest)
    with pytest.raises(KeyboardInterrupt):
        index_embeddings(tmp_path / "vectors.npy", index_dir, options=IndexOptions(shard_size=20))
    monkeypatch.undo()
    report = check_index(index_dir)
    assert report.ok and report.vectors == 40 and report.images == 60
    assert any("20 catalog rows are of vectors an interrupted run never committed" in w for w in report.warnings)
    engine = SearchEngine.open(index_dir)
    assert {h.id for row in engine.search_vectors(vectors[40:], k=1) for h in row} <= set(range(40))
    index_embeddings(tmp_path / "vectors.npy", index_dir, options=IndexOptions(shard_size=20))
    report = check_index(index_dir)
    assert report.ok and not report.warnings and report.vectors == report.images == 60


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 700 KiB tmpfs (root only; skipped elsewhere): room for the first index and a little more."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_ends_in_one_line_and_the_index_still_searches(vector_files, tiny_disk: Path):
    first, everything, x = vector_files
    index_dir = tiny_disk / "index"
    assert _index_vectors(first, index_dir).returncode == 0
    done = _index_vectors(everything, index_dir)
    _assert_one_line_and_still_searchable(done, index_dir, x, os.strerror(errno.ENOSPC))
    assert "free some space and run again" in done.stderr


@pytest.fixture
def read_only_copy(tmp_path: Path, vector_files):
    """An index, and a read-only bind mount of it (root only; skipped elsewhere)."""
    index_dir, view = tmp_path / "index", tmp_path / "read-only"
    assert _index_vectors(vector_files[0], index_dir).returncode == 0
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(index_dir), str(view)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_a_read_only_index_directory_ends_in_one_line(vector_files, read_only_copy: Path):
    x = vector_files[2]
    done = _index_vectors(vector_files[1], read_only_copy)
    _assert_one_line_and_still_searchable(done, read_only_copy, x, os.strerror(errno.EROFS))
    assert "make the index directory writable" in done.stderr


def test_every_write_error_of_the_file_system_is_one_line(tmp_path: Path, monkeypatch):
    """Wherever a write fails (here injected into every atomic write), the CLI prints one line, exit 1."""
    from babelsearch.engine import layout

    photos = tmp_path / "photos"
    colour_photos(photos, 4)
    index_dir = tmp_path / "index"
    assert invoke("index", photos, "--index", index_dir, "--model", "test-colours", "-q").exit_code == 0
    colour_photos(photos, 4, start=4)
    for code in (errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EDQUOT, errno.EIO):

        def refuse(path, write, *, durable=True, code=code):
            raise OSError(code, os.strerror(code), str(path))

        monkeypatch.setattr(layout, "atomic_write", refuse)
        result = CliRunner().invoke(cli, ["index", str(photos), "--index", str(index_dir), "-q"])
        assert result.exit_code == 1 and result.exception is None or isinstance(result.exception, SystemExit)
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and os.strerror(code) in errors[0], result.output
        monkeypatch.undo()
        assert SearchEngine.open(index_dir).count == 4


def test_the_cli_ignores_sigxfsz_so_a_limit_is_reported_not_fatal():
    code = "import signal, babelsearch.cli as c; c.cli.main = lambda **k: None; c.main(); print(signal.getsignal(signal.SIGXFSZ))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() in ("Handlers.SIG_IGN", str(int(__import__("signal").SIG_IGN)))


# -- kill -9 anywhere, then a re-run ------------------------------------------------------------------
KILL_POINTS = ("before-manifest", "shard-written", "before-catalog", "after-checkpoint")


def _kill_cases(seed: int, n: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(rng.choice(KILL_POINTS), rng.randint(1, 6)) for _ in range(n)]


@pytest.mark.parametrize(
    "point, nth",
    [
        case if i < 3 else pytest.param(*case, marks=pytest.mark.slow)
        for i, case in enumerate(_kill_cases(seed=14, n=8))
    ],
)
def test_kill_9_at_a_seeded_random_point_then_a_rerun_agrees_everywhere(tmp_path: Path, point: str, nth: int):
    photos = tmp_path / "photos"
    index_dir = tmp_path / "index"
    first = colour_photos(photos, 12)
    assert (
        run_cli("index", photos, "--index", index_dir, "--model", "test-colours", "--shard-size", 4, "-q").returncode
        == 0
    )
    # the killed run adds, changes and removes: every kind of write is in flight somewhere
    colour_photos(photos, 12, start=12)
    first[0].unlink()
    first[5].unlink()
    write_image(first[3], COLOURS["yellow"], noise_seed=99)
    args = ("index", photos, "--index", index_dir, "--shard-size", 4, "--batch-size", 3, "-q")
    killed = run_cli(*args, env={DEBUG_KILL_ENV: f"{point}:{nth}"})
    assert killed.returncode in (-9, 0), killed.stderr  # a run with fewer such points finishes
    after_kill = check_index(index_dir)
    assert after_kill.ok, after_kill.problems  # only warnings: what the next run repairs
    SearchEngine.open(index_dir).search("red", k=3)  # and it searches meanwhile

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    report = check_index(index_dir)
    assert report.ok and not report.warnings, (report.problems, report.warnings)
    engine = SearchEngine.open(index_dir)
    files = {str(p) for p in photos.iterdir()}
    indexed = {hit.path for hit in engine.search("red", k=100, rerank="none")}
    assert indexed == files and engine.count == len(files) == report.vectors == engine.manifest.images
    changed = next(hit for hit in engine.search("yellow", k=100, rerank="none") if hit.path == str(first[3]))
    assert changed.score > 0.99  # re-embedded with its new content


def test_kill_cases_are_seeded_and_cover_every_point():
    cases = _kill_cases(seed=14, n=8)
    assert cases == _kill_cases(seed=14, n=8)
    assert {point for point, _ in cases} == set(KILL_POINTS)


def test_the_index_directory_is_never_left_with_temp_files_after_a_fault(vector_files, tmp_path: Path):
    first, everything, _ = vector_files
    index_dir = tmp_path / "index"
    assert _index_vectors(first, index_dir).returncode == 0
    assert _index_vectors(everything, index_dir, file_size_limit=20_000).returncode == 1
    leftovers = [p.name for p in index_dir.rglob("*.tmp")]
    assert not leftovers
    shutil.rmtree(index_dir)
