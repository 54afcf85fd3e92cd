"""Decode images safely and keep JPEG thumbnails of catalog images in a cache directory.

Cache file names come from the catalog only (the integer id, the file's sha256, the size), never from
a request: ``{id}-{sha256[:16]}-{size}.jpg``. A re-indexed file with new content gets a new name, so a
stale thumbnail is never shown. Writes go to a temporary file renamed into place, so concurrent
requests for one thumbnail never see half a file.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from babelsearch.engine import images
from babelsearch.engine.errors import InvalidImage

THUMB_SIZES = (256, 1024)  # grid and detail view; nothing else is made, whatever a request asks
JPEG_QUALITY = 85


def open_image(source: str | os.PathLike | bytes, reduce_to: int | None = None) -> Any:
    """Decode a file or bytes into an RGB PIL image with EXIF orientation applied.

    ``reduce_to`` lets JPEG decode at 1/2..1/8 scale when the result still has that shorter side
    (much faster for big photos). Anything undecodable or too large raises ``InvalidImage``.
    """
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            if image.width * image.height > images.MAX_PIXELS:
                raise InvalidImage(f"image too large ({image.width}x{image.height} pixels)")
            if reduce_to and image.format == "JPEG":
                scale = reduce_to / min(image.size)
                if scale < 1:
                    image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
            image = ImageOps.exif_transpose(image)
            image = images.to_rgb(image)
            image.load()
            return image
    except InvalidImage:
        raise
    except Exception as exc:  # PIL raises many types for damaged data; each becomes one message
        raise InvalidImage(f"not a readable image ({type(exc).__name__}: {exc})") from None


class ThumbnailCache:
    """JPEG thumbnails of catalog images, made on first request and kept in ``directory``."""

    def __init__(self, directory: str | os.PathLike | None) -> None:
        # None, or a directory that cannot be created: thumbnails are made each time, not kept
        self.directory = Path(directory) if directory is not None else None

    def thumbnail(self, row: dict[str, Any], size: int) -> bytes:
        """The JPEG bytes of a catalog row's image, fitted into size x size (never enlarged)."""
        if size not in THUMB_SIZES:
            raise ValueError(f"thumbnail size must be one of {THUMB_SIZES}")
        cached = self._path(row, size)
        if cached is not None:
            try:
                return cached.read_bytes()
            except FileNotFoundError:
                pass
        data = render_thumbnail(row["path"], size)
        if cached is not None:
            self._store(cached, data)
        return data

    def _path(self, row: dict[str, Any], size: int) -> Path | None:
        if self.directory is None:
            return None
        digest = "".join(c for c in str(row.get("sha256") or "") if c in "0123456789abcdef")[:16]
        return self.directory / f"{int(row['id'])}-{digest or 'nohash'}-{int(size)}.jpg"

    def _store(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".jpg")
        except OSError:
            return  # a read-only index directory still serves thumbnails, just without keeping them
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)


def render_thumbnail(path: str | os.PathLike, size: int) -> bytes:
    """Decode an image file and return it as JPEG fitted into size x size."""
    from PIL import Image

    image = open_image(path, reduce_to=size)
    image.thumbnail((size, size), Image.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()
