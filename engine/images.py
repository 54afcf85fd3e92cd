"""Small image helpers shared by the indexer and the web UI (PIL is imported only when called)."""

from __future__ import annotations

from typing import Any

# Decompression-bomb guard: images with more pixels are refused with a clear reason.
MAX_PIXELS = 250_000_000


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
