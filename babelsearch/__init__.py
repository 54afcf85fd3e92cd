"""babelsearch: cross-lingual image search. The public API, in one place:

    import babelsearch

    babelsearch.build_index(["~/Pictures"], "my-index")
    engine = babelsearch.SearchEngine.open("my-index")
    engine.search("ein Hund im Schnee", k=10)
    babelsearch.Client("http://127.0.0.1:8000").search("猫")

The subpackages are ``babelsearch.engine`` (the query layer), ``babelsearch.indexer`` (writes
indexes) and ``babelsearch.webui`` (Flask app and HTTP client); this top-level module loads them only
when a name is first used, so ``import babelsearch`` stays cheap and the client never pulls torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.3.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "SearchEngine": "babelsearch.engine.search",
    "Hit": "babelsearch.engine.search",
    "SearchOptions": "babelsearch.engine.options",
    "Where": "babelsearch.engine.filters",
    "Encoder": "babelsearch.engine.encoders",
    "get_encoder": "babelsearch.engine.encoders",
    "register_encoder": "babelsearch.engine.encoders",
    "available_models": "babelsearch.engine.encoders",
    "DEFAULT_MODEL": "babelsearch.engine.encoders",
    "build_index": "babelsearch.indexer.build",
    "IndexOptions": "babelsearch.indexer.pipeline",
    "IndexReport": "babelsearch.indexer.pipeline",
    "index_embeddings": "babelsearch.indexer.embeddings",
    "update_image_terms": "babelsearch.indexer.bank_terms",
    "Client": "babelsearch.webui.client",
    "create_app": "babelsearch.webui",
}
_ERRORS = (
    "BabelsearchError",
    "IncompatibleIndex",
    "IndexBusy",
    "IndexDamaged",
    "ImageNotFound",
    "ImageTooLarge",
    "IndexNotFound",
    "InvalidImage",
    "InvalidQuery",
    "InvalidSetting",
    "ModelUnavailable",
    "SourceError",
    "UnknownModel",
)
_EXPORTS.update({name: "babelsearch.engine.errors" for name in _ERRORS})

__all__ = [
    "DEFAULT_MODEL",
    "BabelsearchError",
    "Client",
    "Encoder",
    "Hit",
    "ImageNotFound",
    "ImageTooLarge",
    "IncompatibleIndex",
    "IndexBusy",
    "IndexDamaged",
    "IndexNotFound",
    "IndexOptions",
    "IndexReport",
    "InvalidImage",
    "InvalidQuery",
    "InvalidSetting",
    "ModelUnavailable",
    "SearchEngine",
    "SearchOptions",
    "SourceError",
    "UnknownModel",
    "Where",
    "available_models",
    "build_index",
    "create_app",
    "get_encoder",
    "index_embeddings",
    "register_encoder",
    "update_image_terms",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'babelsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .engine.encoders import DEFAULT_MODEL, Encoder, available_models, get_encoder, register_encoder
    from .engine.errors import (
        BabelsearchError,
        ImageNotFound,
        ImageTooLarge,
        IncompatibleIndex,
        IndexBusy,
        IndexDamaged,
        IndexNotFound,
        InvalidImage,
        InvalidQuery,
        InvalidSetting,
        ModelUnavailable,
        SourceError,
        UnknownModel,
    )
    from .engine.filters import Where
    from .engine.options import SearchOptions
    from .engine.search import Hit, SearchEngine
    from .indexer.bank_terms import update_image_terms
    from .indexer.build import build_index
    from .indexer.embeddings import index_embeddings
    from .indexer.pipeline import IndexOptions, IndexReport
    from .webui import create_app
    from .webui.client import Client
