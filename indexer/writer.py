"""IndexWriter: the one writer of an index directory during a run (it holds ``DIR/.lock``).

Durability, in the order every change is made:

1. shard files (``NNNNN.faiss``, ``.ids.npy``, ``.vectors.npy``) under fresh numbers, each atomic;
2. catalog rows for the new vectors (one SQLite transaction);
3. the manifest that references the new files (atomic: the commit point);
4. deletion of the files the manifest no longer references.

So a committed manifest never names a vector whose catalog row is not committed. A failure or a
crash before 2 (a full disk included) leaves files no manifest names (deleted by the next run);
between 2 and 3, catalog rows above every committed id without a vector (never shown: searches start
from vectors; the next run deletes them and embeds their images again; ``info --check`` warns).
Removal runs the other way round: catalog rows first, then the shards. So an interruption loses at
most the vectors that were being written, and nothing that a committed run had indexed.

Training decisions live in training.py, the repairs made on opening in recovery.py, the lock and
file helpers in files.py.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from babelsearch.engine.catalog import (
    count_images,
    delete_images,
    ensure_schema,
    insert_images,
    max_image_id,
    open_catalog,
)
from babelsearch.engine.encoders import DEFAULT_MODEL, Encoder
from babelsearch.engine.errors import IncompatibleIndex, InvalidSetting
from babelsearch.engine.layout import (
    FORMAT_VERSION,
    MANIFEST,
    MODEL_VERSION,
    Manifest,
    ShardInfo,
    check_model,
    check_model_version,
    read_manifest,
    write_manifest,
)
from babelsearch.engine.shards import RefineStore

from . import device as devices
from .factory import DEFAULT_SHARD_SIZE, FLAT, make_index
from .files import DEFAULT_LOCK_WAIT, acquire_lock, debug_point, release_lock, write_shard_files
from .recovery import check_catalog, check_new_directory, recover
from .training import Training

logger = logging.getLogger(__name__)


@dataclass
class WriterStats:
    train_seconds: float = 0.0
    add_seconds: float = 0.0  # encoding vectors into the index (coarse assignment, PQ codes)
    write_seconds: float = 0.0  # shard files, manifest, catalog rows
    notes: list[str] = field(default_factory=list)


class IndexWriter:
    """Adds, removes and (re)trains; see the module doc for the order of writes."""

    def __init__(self, index_dir: Path, manifest: Manifest, db, lock, device: str):
        self.index_dir = index_dir
        self.manifest = manifest  # read once, under the lock; every later write is of this object
        self.db = db
        self._lock = lock
        self.device = device
        self.stats = WriterStats()
        self.template = None  # the trained, empty index shards are filled from (None: Flat)
        self.training = Training(self)
        self.pending_vectors: list[np.ndarray] = []
        self._pending_ids: list[np.ndarray] = []
        self._pending_rows: list[dict] = []
        self.next_number = 0  # of the next shard file

    @classmethod
    def open(
        cls,
        index_dir: str | os.PathLike,
        model: str | None = None,
        dim: int | None = None,
        shard_size: int | None = None,
        device: str = "auto",
        default_model: str = DEFAULT_MODEL,
        repair: bool = False,
        lock_wait: float = DEFAULT_LOCK_WAIT,
    ) -> IndexWriter:
        """Open (or create) an index directory for writing; repairs what an interrupted run left.

        ``model`` None takes the index's own (``default_model`` for a new index); ``dim`` None is
        checked (or, for a new index, set) by ``use_encoder``. A damaged shard or catalog raises
        IndexDamaged with the way out, unless ``repair`` drops it (recovery.py). Another run writing the
        index is waited for up to ``lock_wait`` seconds (files.acquire_lock), then IndexBusy.
        """
        index_dir = Path(index_dir)
        device = devices.resolve_device(device)
        if not (index_dir / MANIFEST).exists():
            check_new_directory(index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(index_dir, "babelsearch index", lock_wait)
        db = None
        try:
            exists = (index_dir / MANIFEST).exists()  # again: another run may have created it meanwhile
            repaired = None
            if exists:
                manifest = read_manifest(index_dir)
                check_model(manifest, model, index_dir)
                repaired = check_catalog(index_dir, manifest, repair)
            else:
                manifest = Manifest(model=model or default_model, dim=0, shard_size=DEFAULT_SHARD_SIZE)
            if dim is not None:
                _check_dim(manifest, dim, index_dir)
            if shard_size is not None:
                if shard_size < 1:
                    raise InvalidSetting("shard_size must be at least 1")
                manifest.shard_size = shard_size
            manifest.shard_size = manifest.shard_size or DEFAULT_SHARD_SIZE
            db = open_catalog(index_dir)
            ensure_schema(db)
            writer = cls(index_dir, manifest, db, lock, device)
            if repaired:
                writer.note(repaired)
            recover(writer, upgrade=exists and manifest.format_version < FORMAT_VERSION, repair=repair)
        except BaseException:
            if db is not None:
                db.close()
            release_lock(lock)
            raise
        return writer

    def close(self) -> None:
        self.db.close()
        release_lock(self._lock)
        self._lock = None

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def note(self, message: str) -> None:
        self.stats.notes.append(message)
        logger.info(message)

    def use_encoder(self, encoder: Encoder) -> None:
        """Check, once per run, that the encoder's vectors fit the index (dim, model version)."""
        _check_dim(self.manifest, encoder.dim, self.index_dir)
        check_model_version(self.manifest, encoder, self.index_dir)
        version = encoder.version
        if self.count == 0 and version is not None:
            self.manifest.settings[MODEL_VERSION] = str(version)

    # -- state -----------------------------------------------------------------------------------
    @property
    def shards(self) -> list[ShardInfo]:
        return self.manifest.shards

    @property
    def count(self) -> int:
        """Vectors in the index, durable and pending."""
        return sum(s.count for s in self.shards) + sum(len(i) for i in self._pending_ids)

    @property
    def refine_dtype(self) -> np.dtype:
        return np.dtype(self.manifest.refine_dtype)

    def store(self, shard: ShardInfo) -> RefineStore:
        return RefineStore.open(self.index_dir / str(shard.ids), self.index_dir / str(shard.vectors))

    def referenced(self) -> set[str]:
        """The files the manifest names."""
        return {name for s in self.shards for name in (s.file, s.ids, s.vectors) if name}

    def next_id(self) -> int:
        """One more than any id in the catalog, the shards, or the pending vectors."""
        highest = max_image_id(self.db)
        for shard in self.shards:
            ids = self.store(shard).ids
            if len(ids):
                highest = max(highest, int(ids[-1]))
        for ids in self._pending_ids:
            if len(ids):
                highest = max(highest, int(ids.max()))
        return highest + 1

    # -- adding ----------------------------------------------------------------------------------
    def plan(
        self, expected: int, index_factory: str | None = None, retrain: bool = False, extra: np.ndarray | None = None
    ) -> None:
        """Decide the factory for ``expected`` vectors (see ``Training.plan``)."""
        if not self.manifest.dim:
            raise ValueError("the index's dim is not known yet: open with dim, or call use_encoder")
        self.training.plan(expected, index_factory, retrain, extra)

    def add(self, ids: np.ndarray, vectors: np.ndarray, rows: list[dict]) -> None:
        """Queue vectors with their catalog rows; full shards are written as they fill up."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(vectors) or len(ids) != len(rows):
            raise ValueError("ids, vectors and rows must have the same length")
        if not len(ids):
            return
        self._pending_ids.append(ids)
        self.pending_vectors.append(normalized(vectors))
        self._pending_rows.extend(rows)
        if self.training.due:
            self.training.train()
        open_room = self.manifest.shard_size - (self.shards[-1].count if self._open_shard() else 0)
        if sum(len(i) for i in self._pending_ids) >= open_room:
            self.flush()

    def flush(self) -> None:
        """Make every pending vector durable, one shard at a time: shard, manifest, catalog rows."""
        if not self._pending_ids:
            return
        started = time.perf_counter()
        ids = np.concatenate(self._pending_ids)
        vectors = np.concatenate(self.pending_vectors)
        rows = list(self._pending_rows)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate ids in one indexing batch")
        start = 0
        while start < len(ids):
            last = self._open_shard()
            stop = min(len(ids), start + self.manifest.shard_size - (last.count if last else 0))
            piece = ids[start:stop], vectors[start:stop]
            if last is not None:
                shards, old = self.shards[:-1] + [self._extend_shard(last, *piece)], [last]
            else:
                shards, old = self.shards + [self.write_shard(*piece, self.refine_dtype)], []
            debug_point("before-catalog")
            insert_images(self.db, rows[start:stop])
            self.manifest.images = count_images(self.db)
            self.commit(shards, old)
            start = stop
        self._pending_ids.clear()
        self.pending_vectors.clear()
        self._pending_rows.clear()
        self.stats.write_seconds += time.perf_counter() - started
        debug_point("after-checkpoint")

    def set_targets(self, recall: float | None = None, latency_ms: float | None = None) -> None:
        """The search target the index tunes itself to at ``finish`` (None, None: the index's own)."""
        if recall is not None and latency_ms is not None:
            raise InvalidSetting("give a target recall or a target latency, not both")
        if recall is not None:
            if not 0 < recall <= 1:
                raise InvalidSetting("target recall must be in (0, 1]")
            self.manifest.settings["target_recall"] = float(recall)
            self.manifest.settings.pop("target_latency_ms", None)
        if latency_ms is not None:
            if latency_ms <= 0:
                raise InvalidSetting("target latency must be positive")
            self.manifest.settings["target_latency_ms"] = float(latency_ms)
            self.manifest.settings.pop("target_recall", None)

    def finish(self) -> None:
        """Flush, train if this run was to train but never reached its sample size, tune the search
        defaults to the target (tuning.py), save the counts."""
        from .tuning import tune_index

        self.flush()
        self.training.finish()
        tune_index(self)
        self.manifest.images = count_images(self.db)
        write_manifest(self.index_dir, self.manifest)

    def _open_shard(self) -> ShardInfo | None:
        """The last shard if it has room for more vectors."""
        if self.shards and self.shards[-1].count < self.manifest.shard_size:
            return self.shards[-1]
        return None

    def _extend_shard(self, shard: ShardInfo, ids: np.ndarray, vectors: np.ndarray) -> ShardInfo:
        import faiss

        dtype = self.refine_dtype
        store = self.store(shard)
        index = faiss.read_index(str(self.index_dir / shard.file))
        all_ids = np.concatenate([np.asarray(store.ids), ids])
        all_vectors = np.concatenate([np.asarray(store.vectors, dtype=dtype), vectors.astype(dtype)])
        return self.write_shard(all_ids, all_vectors, dtype, index=index, new=(ids, vectors))

    def write_shard(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        dtype,
        index=None,
        new: tuple[np.ndarray, np.ndarray] | None = None,
        reuse: ShardInfo | None = None,
    ) -> ShardInfo:
        """Write one shard under a fresh number: the faiss index (``index`` plus ``new``, or a fresh
        one filled with all ``vectors``) and the id-sorted refine files (``reuse``'s when unchanged)."""
        if index is None:
            import faiss

            index = make_index(FLAT, self.manifest.dim) if self.template is None else faiss.clone_index(self.template)
            new = (ids, vectors)
        started = time.perf_counter()
        if new is not None and len(new[0]):
            index = devices.add(index, new[1], new[0], self.device)
        self.stats.add_seconds += time.perf_counter() - started
        number, self.next_number = self.next_number, self.next_number + 1
        unchanged = reuse is not None and reuse.ids and self.refine_dtype == np.dtype(dtype)
        return write_shard_files(self.index_dir, number, index, ids, vectors, dtype, reuse if unchanged else None)

    # -- removing --------------------------------------------------------------------------------
    def remove(self, ids: Iterable[int]) -> int:
        """Remove images by id: catalog rows first, then their vectors. Returns rows removed."""
        ids = np.unique(np.asarray(list(ids), dtype=np.int64))
        if not len(ids):
            return 0
        removed = delete_images(self.db, ids.tolist())
        self.drop_vectors(ids)
        return removed

    def drop_vectors(self, ids: np.ndarray) -> None:
        """Rewrite the shards that hold any of ``ids`` without them (the catalog rows are gone)."""
        import faiss

        keep = [~np.isin(p, ids) for p in self._pending_ids]
        self._pending_ids = [p[k] for p, k in zip(self._pending_ids, keep)]
        self.pending_vectors = [p[k] for p, k in zip(self.pending_vectors, keep)]
        dropped = set(ids.tolist())
        self._pending_rows = [r for r in self._pending_rows if r["id"] not in dropped]
        old, shards = [], []
        for shard in self.shards:
            store = self.store(shard)
            gone = np.isin(np.asarray(store.ids), ids)
            if not gone.any():
                shards.append(shard)
                continue
            old.append(shard)
            if gone.all():
                continue
            index = faiss.read_index(str(self.index_dir / shard.file))
            index.remove_ids(np.ascontiguousarray(np.asarray(store.ids)[gone]))
            kept = ~gone
            ids_kept, vectors_kept = np.asarray(store.ids)[kept], np.asarray(store.vectors)[kept]
            shards.append(self.write_shard(ids_kept, vectors_kept, self.refine_dtype, index=index))
        if old:
            self.commit(shards, old)

    # -- committing ------------------------------------------------------------------------------
    def commit(self, shards: list[ShardInfo], old: list[ShardInfo]) -> None:
        """Switch the manifest to ``shards`` (files already durable), then delete what it dropped."""
        debug_point("before-manifest")
        self.manifest.shards = shards
        self.manifest.format_version = FORMAT_VERSION
        write_manifest(self.index_dir, self.manifest)
        referenced = self.referenced()
        for shard in old:
            for name in (shard.file, shard.ids, shard.vectors):
                if name and name not in referenced:
                    (self.index_dir / name).unlink(missing_ok=True)


def _check_dim(manifest: Manifest, dim: int, index_dir: Path) -> None:
    if not manifest.dim:
        manifest.dim = int(dim)  # a new index takes the first vectors' dim
    elif manifest.dim != dim:
        raise IncompatibleIndex(f"vectors have dim {dim}, index {index_dir} has {manifest.dim}")


def normalized(vectors: np.ndarray) -> np.ndarray:
    from babelsearch.engine.encoders import normalize_rows

    return normalize_rows(np.asarray(vectors, dtype=np.float32))
