"""Where: which photos a search may return (folder, date taken, size, orientation, file type).

A small typed object, checked once where it is made, never SQL from users: the catalog turns it into
one parameterised query (``catalog.matching_ids``) and the shards search only the ids it gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from .errors import InvalidQuery

__all__ = ["FILTER_PARAMS", "FILE_TYPES", "ORIENTATIONS", "Where"]

ORIENTATIONS = ("landscape", "portrait", "square")
# Pillow's format names, as the catalog records them; what people also call them
FILE_TYPES = ("jpeg", "png", "gif", "webp", "bmp", "tiff", "heif", "avif")
_TYPE_ALIASES = {"jpg": "jpeg", "heic": "heif", "tif": "tiff"}
# the names of the filters in a web request, a form or the CLI (folder, exclude and type repeat)
FILTER_PARAMS = ("folder", "exclude", "after", "before", "orientation", "min_width", "min_height", "type")
_REPEATED = {"folder": "folders", "exclude": "exclude_folders", "type": "types"}
_MAX_VALUES = 64
_MAX_FOLDER_CHARS = 4096
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?")


@dataclass(frozen=True)
class Where:
    """Which images a search may return; every field left empty allows all.

    ``folders``: path prefixes, any of: an absolute folder matches the images under it; a relative one
    ("2024/summer") matches a folder of that name anywhere in the path. ``exclude_folders``: the same,
    left out. ``after`` / ``before``: "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM[:SS]", after inclusive and
    before exclusive, compared with when the photo was taken (EXIF DateTimeOriginal when present, else
    the file's modification time, recorded at indexing). ``orientation``: "landscape", "portrait" or
    "square" (as shown, after EXIF rotation). ``min_width`` / ``min_height``: pixels. ``types``: file
    formats (see FILE_TYPES; "jpg", "heic" and "tif" are read as their format). A bad value raises
    InvalidQuery here."""

    folders: tuple[str, ...] = ()
    exclude_folders: tuple[str, ...] = ()
    after: str | None = None
    before: str | None = None
    orientation: str | None = None
    min_width: int | None = None
    min_height: int | None = None
    types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "folders", _folders("folders", self.folders))
        set_(self, "exclude_folders", _folders("exclude_folders", self.exclude_folders))
        set_(self, "after", _date("after", self.after))
        set_(self, "before", _date("before", self.before))
        if self.after and self.before and self.after >= self.before:
            raise InvalidQuery(f"after ({self.after}) must be earlier than before ({self.before})")
        if self.orientation is not None:
            orientation = str(self.orientation).strip().lower()
            if orientation not in ORIENTATIONS:
                raise InvalidQuery(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {self.orientation!r}")
            set_(self, "orientation", orientation)
        for name in ("min_width", "min_height"):
            value = getattr(self, name)
            bad = isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000
            if value is not None and bad:
                raise InvalidQuery(f"{name} must be a whole number of pixels from 1 to 1000000, got {value!r}")
        set_(self, "types", _types(self.types))

    @property
    def is_empty(self) -> bool:
        return self == Where()

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None) -> Where | None:
        """A filter from a request's or a form's values (names in FILTER_PARAMS; folder, exclude and type
        may repeat), or None when none is given. Empty values mean "not given"; whole numbers may be text."""
        if not values:
            return None
        given: dict[str, Any] = {}
        for name in FILTER_PARAMS:
            if name in _REPEATED:
                raw = values.getlist(name) if hasattr(values, "getlist") else values.get(name)
                items = [raw] if isinstance(raw, str) else list(raw or [])
                kept = tuple(str(item).strip() for item in items if item is not None and str(item).strip())
                if kept:
                    given[_REPEATED[name]] = kept
                continue
            value = values.get(name)
            if isinstance(value, str):
                value = value.strip()
                if name in ("min_width", "min_height") and value:
                    if not (value.isascii() and value.isdigit()):
                        raise InvalidQuery(f"{name} must be a whole number of pixels, got {value[:40]!r}")
                    value = digits_number(name, value)
            if value is not None and value != "":
                given[name] = value
        return cls(**given) if given else None

    def to_json(self) -> dict[str, Any]:
        """The filter under its request names (only those given)."""
        shown = {
            "folder": list(self.folders),
            "exclude": list(self.exclude_folders),
            "after": self.after,
            "before": self.before,
            "orientation": self.orientation,
            "min_width": self.min_width,
            "min_height": self.min_height,
            "type": list(self.types),
        }
        return {name: value for name, value in shown.items() if value not in (None, [])}


def _folders(name: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value or ())
    if len(items) > _MAX_VALUES:
        raise InvalidQuery(f"{name}: at most {_MAX_VALUES} folders, got {len(items)}")
    kept = []
    for item in items:
        if not isinstance(item, str):
            raise InvalidQuery(f"{name} must be folder paths (text), got {item!r}")
        folder = item.strip()
        if "\x00" in folder or len(folder) > _MAX_FOLDER_CHARS:
            raise InvalidQuery(f"{name}: not a folder path: {folder[:60]!r}")
        # trailing slashes and the spaces between them: "a/ /" is "a", read back the same
        while folder != (trimmed := folder.rstrip("/").rstrip()):
            folder = trimmed
        folder = folder or "/"
        if folder in ("", "."):
            continue
        kept.append(folder)
    return tuple(dict.fromkeys(kept))


def _date(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    if not _DATE.fullmatch(text):
        raise InvalidQuery(f"{name} must be a date such as 2024-07-14 (or 2024-07-14T18:00), got {text[:40]!r}")
    text = text.replace(" ", "T")
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise InvalidQuery(f"{name} is not a real date: {text!r}") from None
    return text


def _types(value: Any) -> tuple[str, ...]:
    items: Iterable[Any] = [value] if isinstance(value, str) else list(value or ())
    kept = []
    for item in items:
        kind = str(item).strip().lower().lstrip(".")
        kind = _TYPE_ALIASES.get(kind, kind)
        if kind not in FILE_TYPES:
            raise InvalidQuery(f"type must be among {', '.join(FILE_TYPES)} (or jpg, heic, tif), got {item!r}")
        kept.append(kind)
    return tuple(dict.fromkeys(kept))


MAX_DIGITS = 18  # every count and size a request gives fits; int() of 4,301 digits raises ValueError


def digits_number(name: str, digits: str) -> int:
    """The whole number a request's ASCII digits spell; InvalidQuery past MAX_DIGITS digits."""
    if len(digits) > MAX_DIGITS:
        raise InvalidQuery(f"{name} must be a whole number of at most {MAX_DIGITS} digits, got {digits[:40]!r}...")
    return int(digits)
