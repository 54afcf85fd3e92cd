"""What one app serves, kept in app.extensions: the engine (or why there is none), thumbnails, counters."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app

from babelsearch.engine import SearchEngine
from babelsearch.engine.errors import BabelsearchError, IndexNotFound
from babelsearch.engine.language import detect_language

from .thumbs import ThumbnailCache

EXTENSION = "babelsearch"


@dataclass
class State:
    """The engine (or why there is none), the thumbnail cache, and the request counters of one app."""

    engine: SearchEngine | None
    load_error: str | None
    thumbs: ThumbnailCache
    started: float = field(default_factory=time.time)
    requests: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def require_engine(self) -> SearchEngine:
        """The engine, or IndexNotFound (a 503 "no_index" at the HTTP edge) saying why there is none."""
        if self.engine is None:
            raise IndexNotFound(self.load_error or "no index loaded")
        return self.engine


def load_state(config: dict[str, Any]) -> State:
    """Open the configured index (or take the given engine); a failure is kept as the reason, not raised."""
    engine, error = config.get("ENGINE"), None
    if engine is None and config.get("INDEX_DIR"):
        try:
            engine = SearchEngine.open(config["INDEX_DIR"])
        except BabelsearchError as exc:
            error = f"no index loaded: {exc}"
    elif engine is None:
        error = "no index loaded: start the server with `babelsearch serve INDEX_DIR`"
    thumb_dir = config.get("THUMB_DIR")
    if thumb_dir is None and engine is not None:
        # hidden, so that an index kept inside a photo folder never has its thumbnails indexed
        thumb_dir = Path(engine.index_dir) / ".thumbs"
    return State(engine, error, ThumbnailCache(thumb_dir or None))


def state() -> State:
    """The State of the app handling the current request."""
    return current_app.extensions[EXTENSION]


def warm_up(engine: SearchEngine) -> None:
    """Load the model's towers and the language detector now, not on the first request."""
    from PIL import Image

    engine.encoder.encode_texts(["warm-up"])
    engine.encoder.encode_images([Image.new("RGB", (64, 64), (128, 128, 128))])
    detect_language("warm up")
