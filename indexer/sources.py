"""Turn SOURCE arguments (folders, path-list files) into the image files to index."""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from babelsearch.engine.errors import SourceError

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
        source = Path(source).expanduser()
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
    try:
        # surrogateescape: a listed name that is not UTF-8 is kept byte for byte, as os.walk keeps one
        text = list_file.read_bytes().decode("utf-8-sig", "surrogateescape")
    except OSError as exc:
        raise SourceError(f"cannot read path list {list_file}: {exc}") from exc
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
        path = Path(entry).expanduser()
        paths.append(absolute(path if path.is_absolute() else base / path))
    return paths
