"""Read, hash and decode image files (run in worker threads: PIL and hashlib release the GIL)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babelsearch.engine.errors import InvalidImage
from babelsearch.engine.images import open_image_and_size


@dataclass
class Decoded:
    path: Path
    image: Any  # PIL.Image.Image, RGB, EXIF orientation applied, possibly reduced
    bytes: int
    mtime: float
    sha256: str
    width: int  # original size, after EXIF orientation
    height: int


@dataclass
class Failed:
    path: Path
    reason: str


def decode_image(path: Path, short_side: int | None = None) -> Decoded | Failed:
    """Decode one file to RGB; with ``short_side``, reduce so the shorter side is exactly that."""
    try:
        stat = os.stat(path)
        data = Path(path).read_bytes()
    except OSError as exc:
        return Failed(path, exc.strerror or str(exc))
    if not data:
        return Failed(path, "empty file")
    digest = hashlib.sha256(data).hexdigest()
    try:
        image, (width, height) = open_image_and_size(data, reduce_to=short_side)
        if short_side and min(image.size) != short_side:
            from PIL import Image

            scale = short_side / min(image.size)
            size = (max(short_side, round(image.width * scale)), max(short_side, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR)
    except InvalidImage as exc:
        return Failed(path, str(exc))
    except Exception as exc:  # anything else (memory for a resize) is a reason too, never a stopped run
        return Failed(path, f"not a readable image ({type(exc).__name__}: {exc})")
    return Decoded(path, image, len(data), stat.st_mtime, digest, width, height)
