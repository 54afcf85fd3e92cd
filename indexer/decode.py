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

import numpy as np

from babelsearch.engine.catalog import stored_path
from babelsearch.engine.errors import InvalidImage
from babelsearch.engine.images import (
    MAX_FILE_BYTES,
    describe_error,
    open_photo,
    read_regular_file,
    resize_short_side,
)

Signature = bytes  # a name of its own: in Decoded, ``bytes`` is a field (the file's size)


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
    signature: Signature | None = None  # pixel_signature of the image (engine.duplicates compares them)


@dataclass
class Failed:
    path: Path
    reason: str


# An encoder that does not say what size it looks at (``local:`` models, custom backends) still gets
# big JPEGs decoded reduced (1/2..1/8 scale): no image model looks at more than this shorter side, and a
# 144-megapixel JPEG decoded whole costs 1.3 GB where reduced it costs 0.2 GB.
UNSIZED_MODEL_SIDE = 1024


def decode_image(path: Path, short_side: int | None = None, max_bytes: int = MAX_FILE_BYTES) -> Decoded | Failed:
    """Decode one file to RGB; with ``short_side``, reduce so the shorter side is exactly that (a very
    thin image cut to its middle first: engine.images.resize_short_side); without, a JPEG is still
    decoded reduced to about ``UNSIZED_MODEL_SIDE``."""
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
        photo = open_photo(data, reduce_to=short_side or UNSIZED_MODEL_SIDE)
        image = photo.image
        if short_side:
            image = resize_short_side(image, short_side)
    except InvalidImage as exc:
        return Failed(path, str(exc))
    except Exception as exc:  # anything else (memory for a resize) is a reason too, never a stopped run
        return Failed(path, f"not a readable image ({describe_error(exc)})")
    try:
        signature = pixel_signature(image)
    except Exception:  # a signature is a help for near-duplicates, never a reason to skip the image
        signature = None
    facts = (photo.width, photo.height, photo.format, photo.taken_at)
    return Decoded(path, image, len(data), stat.st_mtime, digest, *facts, signature=signature)


SIGNATURE_SIDE = 16  # engine.duplicates.SIGNATURE_BYTES = SIGNATURE_SIDE ** 2
# below this spread of grey (standard deviation in 0..255 levels over the 16 x 16 cells) an image is flat
# (one colour, sensor or JPEG noise): it gets the all-zero signature, which engine.duplicates takes as no
# pixel evidence. The 1000 photos of the shared sample spread from 10.8 (1st percentile 17, median 45)
FLAT_GREY = 2.0


def pixel_signature(image: Any) -> bytes:
    """A 256-byte thumbnail for near-duplicate tests: the image (RGB, EXIF orientation applied) in grey
    squeezed to 16 x 16 cells, mean removed and scaled so the largest cell is +-127, as int8 bytes.

    Mean removed and scaled: a brighter, darker or lower-contrast copy gets the same signature, and the
    correlation of two (engine.duplicates.signature_correlations) does not depend on either. The cells are
    averaged from 64 x 64 in float, not rounded to whole grey levels, so a low-contrast photo keeps its shape.
    The image may be the reduced one given to the model: 16 x 16 needs far less than any model keeps."""
    from PIL import Image

    side = 4 * SIGNATURE_SIDE
    grey = np.asarray(image.convert("L").resize((side, side), Image.Resampling.BOX), dtype=np.float32)
    cells = grey.reshape(SIGNATURE_SIDE, 4, SIGNATURE_SIDE, 4).mean(axis=(1, 3)).ravel()
    cells -= cells.mean()
    if cells.std() < FLAT_GREY:
        return bytes(SIGNATURE_SIDE * SIGNATURE_SIDE)
    scaled = np.round(cells * (127.0 / np.abs(cells).max()))
    return scaled.astype(np.int8).tobytes()


def _os_reason(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        try:
            return f"a broken link (to {os.readlink(path)}, which does not exist)"
        except OSError:
            pass
    return exc.strerror or describe_error(exc)
