"""Offline indexer: image files -> encoder -> shards + catalog + manifest."""

from .build import IndexReport, build_index
from .sources import IMAGE_EXTENSIONS, collect_images

__all__ = ["IMAGE_EXTENSIONS", "IndexReport", "build_index", "collect_images"]
