"""The per-user cache of derived model data (class prototypes, ONNX exports, bank vectors)."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """``$BABELSEARCH_CACHE``, else ``$XDG_CACHE_HOME/babelsearch``, else ``~/.cache/babelsearch``."""
    base = os.environ.get("BABELSEARCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "babelsearch"
    )
    return Path(base)
