"""Turn SOURCE arguments (folders, path-list files) into the image files to index."""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from babelsearch.engine.errors import SourceError
from babelsearch.engine.layout import expand_home

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)
LIST_EXTENSIONS = frozenset({".txt", ".csv", ".tsv", ".lst"})


def collect_images(sources: Iterable[str | os.PathLike]) -> list[Path]:
    """Absolute paths of all images under the sources, each once, in a stable order.

    A folder is walked recursively for known image extensions; a ``.txt``/``.csv``/``.tsv``/``.lst``
    file lists one path per line (CSV/TSV: the ``path`` column, else the first column; relative
    paths are relative to the list file). A path listed but missing is kept: the decoder reports it,
    as it reports what is not a regular file (a FIFO, a device). A broken link is kept under its own
    name, not its target's, so that the report names the file a person can find.
    """
    seen: dict[Path, None] = {}
    for source in sources:
        source = expand_home(source)
        if source.is_dir():
            found = walk_folder(source)
        elif source.is_file() and source.suffix.lower() in IMAGE_EXTENSIONS:
            found = [source.resolve()]
        elif source.is_file() and source.suffix.lower() in LIST_EXTENSIONS:
            found = read_path_list(source)
        elif source.exists():
            raise SourceError(
                f"{source} is neither a folder, an image, nor a path list ({', '.join(sorted(LIST_EXTENSIONS))})"
            )
        else:
            raise SourceError(f"{source} does not exist")
        for path in found:
            seen.setdefault(path, None)
    return list(seen)


def walk_folder(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(absolute(Path(root) / name))
    return found


def absolute(path: Path) -> Path:
    """The resolved path of a regular file (links followed, so each file is listed once).

    Anything else keeps its own name, in its resolved folder: a broken link, a link to a device or a
    FIFO, a name that cannot be resolved (a NUL byte in a list, a link loop). The decoder then reports
    that name, which a person can find, not a target such as /dev/zero."""
    try:
        resolved = path.resolve()
        if stat.S_ISREG(resolved.stat().st_mode):
            return resolved
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a link loop (Python 3.11, 3.12)
        pass
    try:
        return path.parent.resolve() / path.name
    except (OSError, ValueError, RuntimeError):
        return Path(os.path.abspath(path))


def read_path_list(list_file: Path) -> list[Path]:
    """The paths a list file names (see ``collect_images``); SourceError for a list that is not text."""
    try:
        data = list_file.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read path list {list_file}: {exc.strerror or exc}") from None
    text = path_list_text(data, list_file)
    base = list_file.resolve().parent
    if list_file.suffix.lower() in {".csv", ".tsv"}:
        delimiter = "\t" if list_file.suffix.lower() == ".tsv" else ","
        rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
        column = 0
        if rows and "path" in [c.strip().lower() for c in rows[0]]:
            column = [c.strip().lower() for c in rows[0]].index("path")
            rows = rows[1:]
        entries = [row[column].strip() for row in rows if len(row) > column]
    else:
        entries = [line.strip() for line in text.splitlines()]
    paths = []
    for entry in entries:
        if not entry or entry.startswith("#"):
            continue
        path = expand_home(entry)
        paths.append(absolute(path if path.is_absolute() else base / path))
    return paths


# what a file given as a path list may be instead, by its first bytes: (signature, what it looks like)
_SIGNATURES = [
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an office document)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program"),
    (b"SQLite format 3\x00", "an SQLite database"),
]
_BOMS = [
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
]
# bytes no text file holds (tab, newline, carriage return and form feed excepted)
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13)) + b"\x7f"
_SAVE_AS_UTF8 = "a path list is UTF-8 text, one path per line"


def path_list_text(data: bytes, list_file: Path) -> str:
    """The text of a path list: UTF-8 (names that are not UTF-8 kept byte for byte, as os.walk keeps
    them), or UTF-16/32 with a byte-order mark. Anything else (an image or binary file given by
    mistake, UTF-16 without a mark) raises SourceError saying what it looks like: read as paths, each
    of its "lines" would be skipped and the run would end "indexed 0" without saying why."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError:
                raise SourceError(
                    f"path list {list_file} starts as {codec.upper()} text but is not; {_SAVE_AS_UTF8}"
                ) from None
    looks = _looks_like(data)
    if looks:
        raise SourceError(f"path list {list_file} is not a text file: it looks like {looks}; {_SAVE_AS_UTF8}")
    return data.decode("utf-8-sig", "surrogateescape")


def _looks_like(data: bytes) -> str | None:
    """What ``data`` looks like when it is not text a path list can be; None for text."""
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    head = data[:4096]
    if b"\x00" not in head and not head.translate(None, delete=bytes(range(32, 256)) + b"\t\n\f\r"):
        return None
    zeros_odd, zeros_even = head[1::2].count(0), head[0::2].count(0)
    if len(head) >= 4 and max(zeros_odd, zeros_even) > 0.3 * len(head) / 2 and min(zeros_odd, zeros_even) == 0:
        return "UTF-16 text without a byte-order mark"
    if b"\x00" in head or sum(head.count(c) for c in _CONTROL) > max(2, len(head) // 100):
        return "binary data (it holds bytes no text file holds)"
    return None
