"""Read, hash and decode image files (run in worker threads: PIL and hashlib release the GIL).

Whatever a file is or holds, ``decode_image`` returns Decoded or Failed with a reason for people;
it never raises, never blocks on a FIFO, reads at most ``max_bytes``, and the image it returns for a
model is bounded by the crop the model keeps (see engine.images).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babelsearch.engine.catalog import stored_path
from babelsearch.engine.errors import InvalidImage
from babelsearch.engine.images import (
    MAX_FILE_BYTES,
    describe_error,
    open_photo,
    read_regular_file,
    resize_short_side,
)


@dataclass
class Decoded:
    path: Path
    image: Any  # PIL.Image.Image, RGB, EXIF orientation applied, possibly reduced
    bytes: int
    mtime: float
    sha256: str
    width: int  # original size, after EXIF orientation
    height: int
    format: str | None = None  # "jpeg", "png", "heif", ...
    exif_taken_at: str | None = None  # EXIF DateTimeOriginal (ISO, the camera's local time), if written


@dataclass
class Failed:
    path: Path
    reason: str


def decode_image(path: Path, short_side: int | None = None, max_bytes: int = MAX_FILE_BYTES) -> Decoded | Failed:
    """Decode one file to RGB; with ``short_side``, reduce so the shorter side is exactly that (a very
    thin image cut to its middle first: engine.images.resize_short_side)."""
    try:
        stored_path(str(path))  # a name not from the file system's encoding cannot be kept in the catalog
    except UnicodeEncodeError:
        return Failed(path, "its name is neither UTF-8 nor bytes the file system gave, so it cannot be stored")
    try:
        data, stat = read_regular_file(path, max_bytes)
    except InvalidImage as exc:
        return Failed(path, str(exc))
    except OSError as exc:
        return Failed(path, _os_reason(path, exc))
    except (MemoryError, ValueError) as exc:  # ValueError: a name with a NUL byte (from a path list)
        return Failed(path, f"cannot be read ({describe_error(exc)})")
    if not data:
        return Failed(path, "empty file")
    digest = hashlib.sha256(data).hexdigest()
    try:
        photo = open_photo(data, reduce_to=short_side)
        image = photo.image
        if short_side:
            image = resize_short_side(image, short_side)
    except InvalidImage as exc:
        return Failed(path, str(exc))
    except Exception as exc:  # anything else (memory for a resize) is a reason too, never a stopped run
        return Failed(path, f"not a readable image ({describe_error(exc)})")
    return Decoded(
        path, image, len(data), stat.st_mtime, digest, photo.width, photo.height, photo.format, photo.taken_at
    )


def _os_reason(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        try:
            return f"a broken link (to {os.readlink(path)}, which does not exist)"
        except OSError:
            pass
    return exc.strerror or describe_error(exc)
