"""Opening images safely, for the indexer, the thumbnailer and query uploads (PIL is imported only when called)."""

from __future__ import annotations

import io
import os
from typing import Any

from .errors import InvalidImage

# Decompression-bomb guard: images with more pixels are refused with a clear reason.
MAX_PIXELS = 250_000_000

_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture a quarter


def open_image(source: str | os.PathLike | bytes, reduce_to: int | None = None) -> Any:
    """Decode a file or bytes into an RGB PIL image with EXIF orientation applied.

    ``reduce_to`` lets JPEG decode at 1/2..1/8 scale when the result still has that shorter side
    (much faster for big photos). Anything undecodable or too large raises ``InvalidImage``.
    """
    return open_image_and_size(source, reduce_to)[0]


def open_image_and_size(source: str | os.PathLike | bytes, reduce_to: int | None = None) -> tuple[Any, tuple[int, int]]:
    """Like ``open_image``, and the original (width, height) as shown, i.e. after EXIF orientation."""
    Image, ImageOps = _pil()
    try:
        # open reads the header only: the pixel count is checked here, before anything is decoded
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        if image.width * image.height > MAX_PIXELS:
            raise InvalidImage(f"image too large ({image.width}x{image.height} pixels)")
        swapped = image.getexif().get(0x0112, 1) in _SWAPPING_ORIENTATIONS
        size = (image.height, image.width) if swapped else (image.width, image.height)
        if reduce_to and image.format == "JPEG" and reduce_to < min(image.size):
            # JPEG decodes at 1/2, 1/4, 1/8 scale for free; draft keeps the result >= the request
            scale = reduce_to / min(image.size)
            image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        image = to_rgb(ImageOps.exif_transpose(image))
        image.load()
        return image, size
    except InvalidImage:
        raise
    except Image.DecompressionBombError:  # more than twice MAX_PIXELS: refused by Pillow's own guard
        raise InvalidImage("image too large (more pixels than a photo has)") from None
    except Exception as exc:  # PIL raises many types for damaged data; each becomes one message
        raise InvalidImage(f"not a readable image ({type(exc).__name__}: {exc})") from None


def to_rgb(image: Any) -> Any:
    """A PIL image in RGB; transparent areas become white, as a viewer shows them, not black."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _pil() -> tuple[Any, Any]:
    from PIL import Image, ImageOps

    # Pillow has its own bomb guard: a warning above Image.MAX_IMAGE_PIXELS (89 million by default)
    # and an error above twice that, both read from that one process-wide setting. Silencing them per
    # call takes warnings.catch_warnings(), which swaps process-wide state and is not safe in decode
    # worker threads. So the one check that decides is ours (MAX_PIXELS, after the header is read), and
    # Pillow's limit is raised to it so that Pillow never warns about or refuses an image that passes it.
    # Only ever raised, never lowered or disabled (None): other code in the process keeps Pillow's guard
    # (at our limit), a limit an application set higher is left as it is, and an image past ours gets
    # Pillow's warning, then our InvalidImage.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    return Image, ImageOps
