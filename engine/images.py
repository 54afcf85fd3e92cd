"""Opening images safely, for the indexer, the thumbnailer and query uploads (PIL is imported only when called).

Safe means: only regular files are read (a FIFO named x.jpg would block forever, a link to /dev/zero
read until memory ran out), at most ``MAX_FILE_BYTES`` of them; at most ``MAX_PIXELS`` are decoded;
and the work of preparing an image for a model is bounded by the centre crop the model keeps
(``resize_short_side``), whatever the image's shape.

What decoding costs is known from the header, before any pixel is decoded (``decode_pixels``): a
baseline JPEG asked for at a smaller size is decoded at 1/2, 1/4 or 1/8 of its size (a 144-megapixel
photo for a 256-pixel model costs 2.3 megapixels, not 144); every other image (PNG, HEIC, a
progressive JPEG, whose decoder holds every coefficient) costs all its pixels, about 4 bytes each.
A caller serving strangers passes a ceiling (``max_decode_pixels``: uploads, thumbnails) and gets
``ImageTooLarge`` above it; files indexed by their owner are only held to ``MAX_PIXELS``.
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
from dataclasses import dataclass
from datetime import date
from typing import Any

from .errors import ImageTooLarge, InvalidImage

# Decompression-bomb guard: images with more pixels are refused with a clear reason.
MAX_PIXELS = 250_000_000
# Files larger than this are not read (a scanned TIFF of MAX_PIXELS is about 750 MB; photos are far smaller).
MAX_FILE_BYTES = 1 << 30
# The models look at a centre crop about as wide as high. Of an image thinner than 1:MAX_ASPECT only the
# middle can reach that crop, so only the middle is scaled: a 1x4000 strip whose shorter side is scaled up
# to 256 would otherwise be a 256x1,024,000 image (0.8 GB) for a crop of 224x224. Up to this ratio (every
# photo, panoramas too) nothing changes.
MAX_ASPECT = 16

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def read_regular_file(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> tuple[bytes, os.stat_result]:
    """The bytes and stat of a regular file of at most ``max_bytes``.

    Anything else (a FIFO, a device, a socket, a folder, a link to one of them, or a file too large)
    raises InvalidImage saying what it is, without reading it; a file that cannot be opened raises
    the OSError."""
    before = os.stat(path)  # follows links: what matters is what a read would read
    _check_regular(path, before, max_bytes)
    # O_NONBLOCK: a file swapped for a FIFO between the stat and the open must not block the open
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        opened = os.fstat(fd)
        _check_regular(path, opened, max_bytes)
        data = fh.read(max_bytes + 1)  # a file that grew meanwhile is still read no further
    if len(data) > max_bytes:
        raise InvalidImage(f"larger than the limit of {_size(max_bytes)}")
    return data, opened


def _check_regular(path: str | os.PathLike, info: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        if os.path.islink(path):
            kind = f"a link to {os.fsdecode(os.readlink(os.fsencode(path)))}, {kind}"
        raise InvalidImage(f"not a regular file ({kind}); only regular files are read")
    if info.st_size > max_bytes:
        raise InvalidImage(f"larger than the limit of {_size(max_bytes)} ({_size(info.st_size)})")


def _size(n: int) -> str:
    mib = 1 << 20
    if n and n % mib == 0:
        return f"{n // mib:,} MiB"
    return f"{n / mib:,.1f} MiB" if n >= 10 * mib else f"{n:,} bytes"


_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture a quarter
_TURNING_ORIENTATIONS = (2, 3, 4, 5, 6, 7, 8)  # every one but 1 (as taken) mirrors or turns it


def open_image(
    source: str | os.PathLike | bytes, reduce_to: int | None = None, max_decode_pixels: int | None = None
) -> Any:
    """Decode a file or bytes into an RGB PIL image with EXIF orientation applied.

    ``reduce_to`` lets JPEG decode at 1/2..1/8 scale when the result still has that shorter side
    (much faster for big photos). Anything undecodable or too large, and a path that is not a
    regular file (see ``read_regular_file``), raises ``InvalidImage``; an image whose decoding would
    cost more than ``max_decode_pixels`` (see ``decode_pixels``) raises ``ImageTooLarge`` first.
    """
    return open_photo(source, reduce_to, max_decode_pixels).image


@dataclass
class Photo:
    """A decoded image and what the indexer records of it: its size as shown (after EXIF orientation),
    its format (Pillow's name lower-cased: "jpeg", "png", "heif", "avif", ...) and, when the camera
    wrote one, when it was taken (EXIF DateTimeOriginal as ISO text, the camera's local time)."""

    image: Any
    width: int
    height: int
    format: str | None = None
    taken_at: str | None = None


# EXIF: the Exif sub-IFD, and in it DateTimeOriginal ("2024:07:14 18:03:59")
_EXIF_IFD = 0x8769
_DATE_TIME_ORIGINAL = 0x9003
_EXIF_DATE = re.compile(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")


def exif_taken_at(exif: Any) -> str | None:
    """EXIF DateTimeOriginal as ``YYYY-MM-DDTHH:MM:SS``, or None when absent or not a real date
    (cameras write "0000:00:00 00:00:00" when their clock was never set)."""
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_DATE_TIME_ORIGINAL)
    except Exception:  # a damaged EXIF block loses the date, never the photo
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    match = _EXIF_DATE.match(raw.strip()) if isinstance(raw, str) else None
    if not match:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    if not (1800 <= year <= 9999 and hour < 24 and minute < 60 and second < 61):
        return None
    try:
        date(year, month, day)  # "2024:02:30" is no day: the filters compare dates as text
    except ValueError:
        return None
    return f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{min(second, 59):02d}"


def open_photo(
    source: str | os.PathLike | bytes, reduce_to: int | None = None, max_decode_pixels: int | None = None
) -> Photo:
    """Like ``open_image``, with the facts the catalog keeps (see Photo)."""
    if not isinstance(source, bytes):
        try:
            source = read_regular_file(source)[0]
        except OSError as exc:
            raise InvalidImage(f"cannot be read ({exc.strerror or exc})") from None
    Image, ImageOps = _pil()
    try:
        # open reads the header only: the pixel count is checked here, before anything is decoded
        image = Image.open(io.BytesIO(source))
        if decode_pixels(image) > MAX_PIXELS:
            raise InvalidImage(f"image too large ({image.width}x{image.height} pixels)")
        if max_decode_pixels is not None and decode_pixels(image, reduce_to) > max_decode_pixels:
            raise ImageTooLarge(_too_costly(image, max_decode_pixels))
        exif = image.getexif()
        # Pillow's TIFF reader turns the image itself as it loads, and its header size is the turned one
        swapped = exif.get(0x0112, 1) in _SWAPPING_ORIENTATIONS and image.format != "TIFF"
        size = (image.height, image.width) if swapped else (image.width, image.height)
        kind = (image.format or "").lower() or None
        taken_at = exif_taken_at(exif)
        if reduce_to and image.format == "JPEG" and reduce_to < min(image.size):
            # JPEG decodes at 1/2, 1/4, 1/8 scale for free; draft keeps the result >= the request
            scale = reduce_to / min(image.size)
            image.draft("RGB", (max(1, round(image.width * scale)), max(1, round(image.height * scale))))
        if exif.get(0x0112, 1) in _TURNING_ORIENTATIONS:
            image = ImageOps.exif_transpose(image)  # otherwise it returns a copy: twice the pixels in memory
        image = to_rgb(image)
        image.load()
        return Photo(image, size[0], size[1], kind, taken_at)
    except InvalidImage:
        raise
    except Image.DecompressionBombError:  # more than twice MAX_PIXELS: refused by Pillow's own guard
        raise InvalidImage("image too large (more pixels than a photo has)") from None
    except Image.UnidentifiedImageError:  # its message names a BytesIO object, which tells a person nothing
        raise InvalidImage("not a readable image (not in any format Pillow reads, or its start is damaged)") from None
    except Exception as exc:  # PIL raises many types for damaged data; each becomes one message
        raise InvalidImage(f"not a readable image ({describe_error(exc)})") from None


_JPEG_SCALES = (8, 4, 2)
# Pillow keeps a pointer (8 bytes) per row beside 4 bytes per pixel: a 1 x 50,000,000 image costs 600 MB,
# not 200; each row counts as the 2 pixels it weighs
ROW_PIXELS = 2


def decode_pixels(image: Any, reduce_to: int | None = None) -> int:
    """The pixels decoding ``image`` (opened: its header read, nothing decoded) will hold, asked for at a
    shorter side of ``reduce_to``: a baseline JPEG at the draft scale ``open_photo`` uses, anything else
    (a progressive JPEG included: its decoder keeps every coefficient of the full size) whole; plus
    ``ROW_PIXELS`` per row, what Pillow's row table weighs."""
    width, height = image.size
    if image.format != "JPEG" or not reduce_to or _progressive(image):
        scale = 1
    else:
        # Pillow's draft picks the largest scale that keeps the requested size (libjpeg's scaled IDCT)
        scale = next((s for s in _JPEG_SCALES if min(width, height) / s >= reduce_to), 1)
    rows = math.ceil(height / scale)
    return math.ceil(width / scale) * rows + ROW_PIXELS * rows


def _progressive(image: Any) -> bool:
    """A progressive JPEG (Pillow marks the SOF2 frame so): no draft scale saves its decoder memory."""
    return bool(image.info.get("progressive") or image.info.get("progression"))


def _too_costly(image: Any, limit: int) -> str:
    kind = (image.format or "image").upper()
    if kind == "JPEG" and _progressive(image):
        kind = "progressive JPEG"
    megapixels = image.width * image.height / 1e6
    return (
        f"image too large to decode here: a {image.width}x{image.height} {kind} ({megapixels:,.0f} megapixels); "
        f"at most {limit / 1e6:g} megapixels are decoded (a baseline JPEG may be larger: it is decoded reduced)"
    )


_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for a reason shown to people: no ``<_io.BytesIO object at 0x...>``."""
    text = _OBJECT_REPR.sub("", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def centre_strip(image: Any, max_aspect: float = MAX_ASPECT) -> Any:
    """An image thinner than 1:``max_aspect`` cut to its middle at that ratio (the part a centre crop can
    keep); any other image as it is."""
    width, height = image.size
    keep = max(1, math.ceil(min(width, height) * max_aspect))
    if max(width, height) <= keep:
        return image
    if width > height:
        left = (width - keep) // 2
        return image.crop((left, 0, left + keep, height))
    top = (height - keep) // 2
    return image.crop((0, top, width, top + keep))


def resize_short_side(image: Any, short_side: int, max_aspect: float = MAX_ASPECT) -> Any:
    """The image with its shorter side exactly ``short_side`` (bilinear), for a model's centre crop.

    A very thin image is first cut to its middle (``centre_strip``), so the work and memory stay bounded
    by what the crop keeps (at most ``short_side`` x ``max_aspect * short_side`` pixels), never by how
    far a 1-pixel side would be scaled up."""
    from PIL import Image

    image = centre_strip(image, max_aspect)
    width, height = image.size
    if min(width, height) == short_side:
        return image
    scale = short_side / min(width, height)
    size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


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
    register_heif()
    return Image, ImageOps


_heif_registered = False


def register_heif() -> bool:
    """Teach Pillow HEIC/HEIF (iPhone photos) through pillow-heif, once per process; False when it is
    not installed (those files are then skipped as unreadable, with the reason). AVIF is Pillow's own."""
    global _heif_registered
    if not _heif_registered:
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            return False
        register_heif_opener()
        _heif_registered = True
    return True
