"""Offline indexer: image files (or precomputed vectors) -> encoder -> shards + catalog + manifest."""

from .build import IndexOptions, IndexReport, build_index
from .embeddings import index_embeddings
from .sources import IMAGE_EXTENSIONS, collect_images

__all__ = ["IMAGE_EXTENSIONS", "IndexOptions", "IndexReport", "build_index", "collect_images", "index_embeddings"]
