"""babelsearch's query layer: encoders, the index layout, and the SearchEngine."""

from .encoders import DEFAULT_MODEL, Encoder, available_models, get_encoder, register_encoder
from .errors import (
    BabelsearchError,
    IncompatibleIndex,
    ImageNotFound,
    IndexNotFound,
    InvalidImage,
    InvalidQuery,
    SourceError,
    UnknownModel,
)
from .search import Hit, SearchEngine

__all__ = [
    "DEFAULT_MODEL",
    "BabelsearchError",
    "Encoder",
    "Hit",
    "IncompatibleIndex",
    "ImageNotFound",
    "IndexNotFound",
    "InvalidImage",
    "InvalidQuery",
    "SearchEngine",
    "SourceError",
    "UnknownModel",
    "available_models",
    "get_encoder",
    "register_encoder",
]
