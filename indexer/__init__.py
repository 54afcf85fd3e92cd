"""Offline indexer: image files (or precomputed vectors) -> encoder -> shards + catalog + manifest."""

if __name__ != "babelsearch.indexer":  # the checkout's indexer/ folder imported as a top-level package
    raise ImportError(
        "babelsearch's packages are installed under one name: import babelsearch.indexer "
        "(and install the project, e.g. `pip install -e .`), not indexer"
    )

from .build import build_index
from .embeddings import index_embeddings
from .pipeline import IndexOptions, IndexReport
from .sources import IMAGE_EXTENSIONS, collect_images

__all__ = ["IMAGE_EXTENSIONS", "IndexOptions", "IndexReport", "build_index", "collect_images", "index_embeddings"]
