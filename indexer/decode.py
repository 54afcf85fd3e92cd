"""Read, hash and decode image files (run in worker threads: PIL and hashlib release the GIL)."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babelsearch.engine.images import MAX_PIXELS
from babelsearch.engine.images import to_rgb as _to_rgb


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
    from PIL import Image, ImageOps

    try:
        stat = os.stat(path)
        data = Path(path).read_bytes()
    except OSError as exc:
        return Failed(path, exc.strerror or str(exc))
    if not data:
        return Failed(path, "empty file")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                return Failed(path, f"image too large ({image.width}x{image.height})")
            orientation = image.getexif().get(0x0112, 1)
            swapped = orientation in (5, 6, 7, 8)
            width, height = (image.height, image.width) if swapped else (image.width, image.height)
            if short_side and image.format == "JPEG":
                # JPEG can decode at 1/2, 1/4, 1/8 scale for free; draft keeps the result >= the request
                scale = short_side / min(image.size)
                image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
            image = ImageOps.exif_transpose(image)
            image = _to_rgb(image)
            if short_side and min(image.size) != short_side:
                scale = short_side / min(image.size)
                size = (max(short_side, round(image.width * scale)), max(short_side, round(image.height * scale)))
                image = image.resize(size, Image.BILINEAR)
            image.load()
    except Exception as exc:  # PIL raises many types for damaged files; each becomes a reason
        return Failed(path, f"not a readable image ({type(exc).__name__}: {exc})")
    return Decoded(path, image, len(data), stat.st_mtime, digest, width, height)
