"""babelsearch's query layer: encoders, the index layout, and the SearchEngine."""

if __name__ != "babelsearch.engine":  # the checkout's engine/ folder imported as a top-level package
    raise ImportError(
        "babelsearch's packages are installed under one name: import babelsearch.engine "
        "(and install the project, e.g. `pip install -e .`), not engine"
    )

from .encoders import DEFAULT_MODEL, Encoder, available_models, get_encoder, register_encoder
from .errors import (
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
from .filters import Where
from .search import Hit, SearchEngine

__all__ = [
    "DEFAULT_MODEL",
    "BabelsearchError",
    "Encoder",
    "Hit",
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
    "SearchEngine",
    "SourceError",
    "UnknownModel",
    "Where",
    "available_models",
    "get_encoder",
    "register_encoder",
]
