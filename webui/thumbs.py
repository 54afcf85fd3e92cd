"""JPEG thumbnails of catalog images, kept in a cache directory.

Cache file names come from the catalog only (the integer id, the file's sha256, the size), never from
a request: ``{id}-{sha256[:16]}-{size}.jpg``. A re-indexed file with new content gets a new name, so a
stale thumbnail is never shown. Writes are atomic (a temporary file renamed into place), so concurrent
requests for one thumbnail never see half a file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO

from babelsearch.engine.images import open_image
from babelsearch.engine.layout import atomic_write_bytes

THUMB_SIZES = (256, 1024)  # grid and detail view; nothing else is made, whatever a request asks
JPEG_QUALITY = 85


class ThumbnailCache:
    """JPEG thumbnails of catalog images, made on first request and kept in ``directory``."""

    def __init__(self, directory: str | os.PathLike | None, max_decode_pixels: int | None = None) -> None:
        # None, or a directory that cannot be written: thumbnails are made each time, not kept
        self.directory = Path(directory) if directory is not None else None
        # images costlier to decode are refused (ImageTooLarge): any visitor can ask for any thumbnail
        self.max_decode_pixels = max_decode_pixels

    def thumbnail(self, row: dict[str, Any], size: int, source: BinaryIO | None = None) -> bytes:
        """The JPEG bytes of a catalog row's image, fitted into size x size (never enlarged).

        ``source``: the image file, already opened and checked (webui.files); else the row's path."""
        if size not in THUMB_SIZES:
            raise ValueError(f"thumbnail size must be one of {THUMB_SIZES}")
        cached = self._path(row, size)
        if cached is not None:
            try:
                data = cached.read_bytes()
            except OSError:  # not made yet, or a cache directory that cannot be read: a miss
                data = b""
            # written without fsync, a file cut short by a power loss is made again, not served
            if data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9":
                return data
        # the checked file's own bytes, read through its descriptor: never what its path leads to by now
        data = render_thumbnail(row["path"] if source is None else source.read(), size, self.max_decode_pixels)
        if cached is not None:
            try:
                # a cache: losing a write costs one more rendering, so no fsync on a page view
                atomic_write_bytes(cached, data, durable=False)
            except OSError:
                pass  # a read-only index directory still serves thumbnails, just without keeping them
        return data

    def _path(self, row: dict[str, Any], size: int) -> Path | None:
        if self.directory is None:
            return None
        digest = "".join(c for c in str(row.get("sha256") or "") if c in "0123456789abcdef")[:16]
        return self.directory / f"{int(row['id'])}-{digest or 'nohash'}-{int(size)}.jpg"


def render_thumbnail(source: str | os.PathLike | bytes, size: int, max_decode_pixels: int | None = None) -> bytes:
    """Decode an image (a file's path or its bytes) and return it as JPEG fitted into size x size;
    ImageTooLarge if decoding it would cost more than ``max_decode_pixels`` (engine.images)."""
    from PIL import Image

    image = open_image(source, reduce_to=size, max_decode_pixels=max_decode_pixels)
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()
