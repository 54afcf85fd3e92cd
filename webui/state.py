"""What one app serves, kept in app.extensions: the engine (or why there is none), thumbnails, counters.

The engine follows the index: every ``index`` run commits a new generation by replacing manifest.json
atomically, so a stat of that one file (inode, mtime, size) tells that there is something new. A
request checks it at most every INDEX_CHECK_INTERVAL seconds; when it changed, one request opens the
new generation (sharing the loaded model) and swaps it in, while the others go on with the engine
they have. A request takes its engine once, when it starts, so a swap never mixes two generations in
one answer, and a request already running finishes on the old one (its shard files stay readable
after the writer deletes them: they are open or memory-mapped). A generation that cannot be opened
(a writer between two steps, a damaged file) is logged and tried again at the next check; the old
engine goes on serving meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import current_app, g

from babelsearch.engine import SearchEngine
from babelsearch.engine.errors import BabelsearchError, IndexNotFound
from babelsearch.engine.language import detect_language
from babelsearch.engine.layout import manifest_path

from .thumbs import ThumbnailCache

EXTENSION = "babelsearch"
log = logging.getLogger("babelsearch.webui")

# what tells one manifest.json from the next: a commit renames a new file into place (a new inode)
Signature = tuple[int, int, int]


def manifest_signature(index_dir: str | os.PathLike) -> Signature | None:
    """(inode, mtime_ns, size) of an index's manifest, or None when it cannot be read."""
    try:
        st = os.stat(manifest_path(Path(index_dir)))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@dataclass
class State:
    """The engine (or why there is none), the thumbnail cache, and the request counters of one app."""

    _engine: SearchEngine | None
    load_error: str | None
    thumbs: ThumbnailCache
    index_dir: Path | None = None  # watched for new generations; None: the engine is never replaced
    check_interval: float | None = 1.0  # seconds between looks at the manifest; None: never
    started: float = field(default_factory=time.time)
    requests: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    generations: int = 0  # generations swapped in since the start
    reload_error: str | None = None  # why the newest generation could not be opened (None: it was)
    _signature: Signature | None = None
    _next_check: float = 0.0
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def engine(self) -> SearchEngine | None:
        """The newest engine opened so far (a request uses ``request_engine()``, fixed for its duration)."""
        return self._engine

    def current_engine(self) -> SearchEngine | None:
        """The engine to start a request with: the newest generation, looked for at most every interval."""
        if self.index_dir is not None and self.check_interval is not None:
            now = time.monotonic()
            # one request opens a new generation; the others do not wait for it, they use what is there
            if now >= self._next_check and self._reload_lock.acquire(blocking=False):
                try:
                    self._next_check = now + self.check_interval
                    self._pick_up_new_generation()
                finally:
                    self._reload_lock.release()
        return self._engine

    def _pick_up_new_generation(self) -> None:
        assert self.index_dir is not None
        signature = manifest_signature(self.index_dir)
        if signature is None or signature == self._signature:
            return  # unchanged, or no manifest (yet, or the directory went away): keep what is served
        old = self._engine
        try:
            if old is not None:
                engine = old.reopen()
            else:
                engine = SearchEngine.open(self.index_dir)
                check_model_available(engine)  # still unavailable: keep the load error, try again later
        except Exception as exc:  # anything a half-written or damaged index raises, faiss' RuntimeError too
            message = str(exc) if isinstance(exc, BabelsearchError) else f"{type(exc).__name__}: {exc}"
            if message != self.reload_error:  # once per cause, not at every check
                log.warning(
                    "index %s: new generation not opened, still serving the previous one: %s", self.index_dir, message
                )
            self.reload_error = message
            return  # the signature is not kept: tried again at the next check
        # one reference assignment: a request sees the old engine or the new one, never a mixture
        self._engine, self._signature, self.load_error, self.reload_error = engine, signature, None, None
        self.generations += 1
        log.info("index %s: serving the generation of %s", self.index_dir, engine.manifest.updated)


def default_thumb_dir(index_dir: str | os.PathLike) -> Path:
    # hidden, so that an index kept inside a photo folder never has its thumbnails indexed
    return Path(index_dir) / ".thumbs"


def load_state(config: dict[str, Any]) -> State:
    """Open the configured index (or take the given engine); a failure is kept as the reason, not raised."""
    engine, error = config.get("ENGINE"), None
    index_dir = config.get("INDEX_DIR") or (engine.index_dir if engine is not None else None)
    # taken before opening: a generation committed while the index opens is picked up at the first check
    signature = manifest_signature(index_dir) if index_dir else None
    if engine is None and config.get("INDEX_DIR"):
        try:
            engine = SearchEngine.open(config["INDEX_DIR"])
            check_model_available(engine)
        except BabelsearchError as exc:
            engine, error = None, f"no index loaded: {exc}"
            signature = None  # an index that appears (or is repaired) later is opened then
    elif engine is None:
        error = "no index loaded: start the server with `babelsearch serve INDEX_DIR`"
    thumb_dir = config.get("THUMB_DIR")
    thumbs = ThumbnailCache(
        default_thumb_dir(index_dir) if thumb_dir is None and index_dir else thumb_dir or None,
        max_decode_pixels=config.get("MAX_DECODE_PIXELS"),
    )
    interval = config.get("INDEX_CHECK_INTERVAL")
    return State(
        engine,
        error,
        thumbs,
        index_dir=Path(index_dir) if index_dir else None,
        check_interval=None if interval is None or interval is False else float(interval),
        _signature=signature,
    )


def check_model_available(engine: SearchEngine) -> None:
    """Load the index's model now if its weights are not in the cache: with no network that is a
    ModelUnavailable (one clear line) while the app is made, not a failure at the first search. A
    cached or bundled model still loads on first use (or ``warm_up``), so making an app stays quick."""
    from babelsearch.engine.encoders.local import weights_present
    from babelsearch.engine.encoders.specs import find_spec

    row = find_spec(engine.manifest.model)
    if row is not None and row.backend != "bundled" and not weights_present(row.files):
        engine.encoder  # noqa: B018 (loaded for its error)


def state() -> State:
    """The State of the app handling the current request."""
    return current_app.extensions[EXTENSION]


def request_engine() -> SearchEngine | None:
    """The engine of the current request, taken once at its start (see the module notes)."""
    if "babelsearch_engine" not in g:
        g.babelsearch_engine = state().current_engine()
    return g.babelsearch_engine


def require_engine() -> SearchEngine:
    """The request's engine, or IndexNotFound (a 503 "no_index" at the HTTP edge) saying why there is none."""
    engine = request_engine()
    if engine is None:
        raise IndexNotFound(state().load_error or "no index loaded")
    return engine


def warm_up(engine: SearchEngine) -> None:
    """Load the model's towers and the language detector now, not on the first request."""
    from PIL import Image

    engine.encoder.encode_texts(["warm-up"])
    engine.encoder.encode_images([Image.new("RGB", (64, 64), (128, 128, 128))])
    detect_language("warm up")
