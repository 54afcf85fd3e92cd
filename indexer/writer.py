"""IndexWriter: the one writer of an index directory during a run (it holds ``DIR/.lock``).

Durability, in the order every change is made:

1. shard files (``NNNNN.faiss``, ``.ids.npy``, ``.vectors.npy``) under fresh numbers, each atomic;
2. the manifest that references them (atomic: the commit point);
3. catalog rows for the new vectors (one SQLite transaction);
4. deletion of the files the manifest no longer references.

A crash before 2 leaves unreferenced files (deleted by the next run); between 2 and 3, vectors
without catalog rows (never shown, dropped by the next run, whose images are then re-embedded).
Removal runs the other way round: catalog rows first, then the shards. So an interruption loses at
most the vectors that were being written, and nothing that a committed run had indexed.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from babelsearch.engine.catalog import IMAGES, ensure_schema, open_catalog
from babelsearch.engine.errors import IncompatibleIndex, IndexBusy
from babelsearch.engine.layout import (
    CATALOG,
    FORMAT_VERSION,
    MANIFEST,
    SHARDS_DIR,
    TRAINED,
    Manifest,
    ShardInfo,
    atomic_write,
    atomic_write_bytes,
    check_model,
    read_manifest,
    write_manifest,
)
from babelsearch.engine.shards import RefineStore

from . import device as devices
from .factory import (
    DEFAULT_SHARD_SIZE,
    FLAT,
    MIN_POINTS_PER_CENTROID,
    OUTGROWN_FACTOR,
    choose_factory,
    default_search_settings,
    is_lossy,
    make_index,
    min_train_points,
    train_points,
)

LOCK = ".lock"
CATALOG_COLUMNS = ("id", "path", "bytes", "mtime", "sha256", "width", "height", "added")
_SHARD_FILE = re.compile(r"^(\d{5,})\.(faiss|ids\.npy|vectors\.npy)$")
# tests only: "POINT:N" kills this process with SIGKILL the N-th time it reaches POINT
DEBUG_KILL_ENV = "BABELSEARCH_DEBUG_KILL"


@dataclass
class WriterStats:
    train_seconds: float = 0.0
    add_seconds: float = 0.0  # encoding vectors into the index (coarse assignment, PQ codes)
    write_seconds: float = 0.0  # shard files, manifest, catalog rows
    notes: list[str] = field(default_factory=list)


class IndexWriter:
    """Adds, removes and (re)trains; see the module doc for the order of writes."""

    def __init__(self, index_dir: Path, manifest: Manifest, db, lock, device: str, log: Callable[[str], None]):
        self.index_dir = index_dir
        self.manifest = manifest
        self.db = db
        self._lock = lock
        self.device = device
        self.stats = WriterStats()
        self._log = log
        self.template = None  # the trained, empty index shards are filled from (None: Flat)
        self._pending_ids: list[np.ndarray] = []
        self._pending_vectors: list[np.ndarray] = []
        self._pending_rows: list[dict] = []
        self._next_number = 0
        self._target: str | None = None  # factory to (re)train to once enough vectors are in
        self._train_at = 0
        self._target_for = 0
        self._forced = False  # --retrain: train even if the factory stays the same

    # -- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        index_dir: str | os.PathLike,
        model: str,
        dim: int,
        shard_size: int | None = None,
        device: str = "auto",
        log: Callable[[str], None] | None = None,
    ) -> "IndexWriter":
        """Open (or create) an index directory for writing; repairs what an interrupted run left."""
        index_dir = Path(index_dir)
        device = devices.resolve_device(device)
        exists = (index_dir / MANIFEST).exists()
        if not exists:
            _check_new_directory(index_dir)
        index_dir.mkdir(parents=True, exist_ok=True)
        lock = _lock(index_dir)
        try:
            if exists:
                manifest = read_manifest(index_dir)
                check_model(manifest, model, index_dir)
                if manifest.dim != dim:
                    raise IncompatibleIndex(f"vectors have dim {dim}, index {index_dir} has {manifest.dim}")
            else:
                manifest = Manifest(model=model, dim=dim, shard_size=DEFAULT_SHARD_SIZE)
            if shard_size is not None:
                if shard_size < 1:
                    raise ValueError("shard_size must be at least 1")
                manifest.shard_size = shard_size
            manifest.shard_size = manifest.shard_size or DEFAULT_SHARD_SIZE
            db = open_catalog(index_dir)
            ensure_schema(db)
            writer = cls(index_dir, manifest, db, lock, device, log or (lambda message: None))
            writer._recover(upgrade=exists and manifest.format_version < FORMAT_VERSION)
        except BaseException:
            _unlock(lock)
            raise
        return writer

    def close(self) -> None:
        self.db.close()
        _unlock(self._lock)
        self._lock = None

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def note(self, message: str) -> None:
        self.stats.notes.append(message)
        self._log(message)

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
        return RefineStore.open(self.index_dir / shard.ids, self.index_dir / shard.vectors)

    def next_id(self) -> int:
        """One more than any id in the catalog, the shards, or the pending vectors."""
        row = next(self.db.query(f"select max(id) as m from {IMAGES}"))
        highest = -1 if row["m"] is None else int(row["m"])
        for shard in self.shards:
            ids = self.store(shard).ids
            if len(ids):
                highest = max(highest, int(ids[-1]))
        for ids in self._pending_ids:
            if len(ids):
                highest = max(highest, int(ids.max()))
        return highest + 1

    # -- planning and training -------------------------------------------------------------------
    def plan(
        self,
        expected: int,
        index_factory: str | None = None,
        retrain: bool = False,
        extra: np.ndarray | None = None,
    ) -> None:
        """Decide the factory for a collection that will hold ``expected`` vectors after this run.

        Training happens as soon as enough vectors are at hand: the index's own plus ``extra``
        (vectors about to be added, e.g. precomputed embeddings), else later, from ``add``.
        """
        current = self.manifest.factory
        if index_factory is not None:
            make_index(index_factory, self.manifest.dim)  # refuses a bad string before any work
            self.manifest.settings["index_factory"] = index_factory
        requested = self.manifest.settings.get("index_factory")
        if requested:
            target, reason = requested, "as requested"
            needed = retrain or requested != current
        else:
            target = choose_factory(expected, self.manifest.dim)
            reason = f"auto for {expected:,} vectors of dim {self.manifest.dim}"
            if retrain:
                needed = True
            elif current == FLAT:
                needed = target != FLAT
            else:
                needed = expected >= OUTGROWN_FACTOR * max(self.manifest.trained_for, 1)
                if needed:
                    self.note(
                        f"the collection ({expected:,} vectors) has outgrown the quantizer trained for "
                        f"{self.manifest.trained_for:,} (x{OUTGROWN_FACTOR}): retraining as {target}"
                    )
        if not needed:
            if current == FLAT or requested:
                self.note(f"index factory: {current} ({reason})")
            else:
                trained_for = self.manifest.trained_for
                self.note(f"index factory: {current} (trained for {trained_for:,} vectors; "
                          f"retrained at {OUTGROWN_FACTOR * trained_for:,})")
            return
        self.note(f"index factory: {target} ({reason})")
        self._target, self._target_for, self._forced = target, expected, retrain
        self._train_at = 0 if target == FLAT else min(expected, self._wanted_train_points(target))
        available = self.count + (0 if extra is None else len(extra))
        if available >= self._train_at:
            self._train(extra)

    def _wanted_train_points(self, factory: str) -> int:
        return train_points(make_index(factory, self.manifest.dim), self.device)

    def _train(self, extra: np.ndarray | None = None) -> None:
        """Train the target factory on a sample and rebuild every shard from its stored vectors."""
        target = self._target
        self._target = None
        if target == FLAT:
            self._convert(None, FLAT)
            return
        index = make_index(target, self.manifest.dim)
        available = self.count + (0 if extra is None else len(extra))
        if available < min_train_points(index):
            self._target = target  # try again once there are enough
            self._train_at = min_train_points(index)
            return
        import faiss

        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        wanted = min(available, train_points(index, self.device))
        per_list = wanted / ivf.nlist
        if per_list < MIN_POINTS_PER_CENTROID:
            self.note(f"training {target} on {wanted:,} vectors ({per_list:.0f} per list; faiss wants >= 39)")
        # we warn once ourselves instead of faiss once per codebook
        ivf.cp.min_points_per_centroid = 1
        if hasattr(ivf, "pq"):
            ivf.pq.cp.min_points_per_centroid = 1
            ivf.do_polysemous_training = False  # polysemous filtering is for L2 codes; we search by IP
        sample = self._sample(wanted, extra)
        started = time.perf_counter()
        index = devices.train(index, sample, self.device)
        self.stats.train_seconds += time.perf_counter() - started
        self.note(f"trained {target} on {wanted:,} vectors in {time.perf_counter() - started:.1f} s ({self.device})")
        self._convert(index, target)

    def _sample(self, n: int, extra: np.ndarray | None) -> np.ndarray:
        """n vectors drawn evenly at random (seeded) from the shards, pending vectors and extra."""
        sources: list = [self.store(s) for s in self.shards] + list(self._pending_vectors)
        if extra is not None:
            sources.append(extra)
        sizes = np.array([len(s) for s in sources], dtype=np.int64)
        picks = np.sort(np.random.default_rng(0).choice(int(sizes.sum()), size=n, replace=False))
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        parts = []
        for source, lo, hi in zip(sources, bounds[:-1], bounds[1:]):
            rows = picks[(picks >= lo) & (picks < hi)] - lo
            if not len(rows):
                continue
            if isinstance(source, RefineStore):
                parts.append(source.rows(rows))
            else:
                parts.append(_normalized(source[rows]))
        return np.concatenate(parts)

    def _convert(self, template, factory: str) -> None:
        """Rebuild every shard with a new trained template (or as Flat), then commit it all at once."""
        old = list(self.shards)
        dtype = np.dtype("float16" if is_lossy(factory) else "float32")
        self.template = template
        new_shards = []
        for shard in old:
            store = self.store(shard)
            vectors = store.rows(np.arange(len(store)))
            new_shards.append(self._write_shard(np.asarray(store.ids), vectors, dtype, reuse=shard))
        self.manifest.factory = factory
        self.manifest.refine_dtype = dtype.name
        self.manifest.trained_for = self._target_for
        self.manifest.settings.update(default_search_settings(template, factory))
        if factory == FLAT:
            self.manifest.settings.pop("nprobe", None)
        self.manifest.trained = TRAINED if template is not None else None
        self.manifest.trained_sha256 = _sha256_bytes(_serialize(template)) if template is not None else None
        self._commit(new_shards, old)
        if template is not None:
            # after the manifest: a crash in between is repaired from the first shard (see _recover)
            _debug_point("before-trained")
            atomic_write_bytes(self.index_dir / TRAINED, _serialize(template))
        else:
            (self.index_dir / TRAINED).unlink(missing_ok=True)

    # -- adding ----------------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray, rows: list[dict]) -> None:
        """Queue vectors with their catalog rows; full shards are written as they fill up."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) != len(vectors) or len(ids) != len(rows):
            raise ValueError("ids, vectors and rows must have the same length")
        if not len(ids):
            return
        self._pending_ids.append(ids)
        self._pending_vectors.append(_normalized(vectors))
        self._pending_rows.extend(rows)
        if self._target is not None and self.count >= self._train_at:
            self._train()
        open_room = self.manifest.shard_size - (self.shards[-1].count if self._open_shard() else 0)
        if sum(len(i) for i in self._pending_ids) >= open_room:
            self.flush()

    def flush(self) -> None:
        """Make every pending vector durable, one shard at a time: shard, manifest, catalog rows."""
        if not self._pending_ids:
            return
        started = time.perf_counter()
        ids = np.concatenate(self._pending_ids)
        vectors = np.concatenate(self._pending_vectors)
        rows = list(self._pending_rows)
        if len(np.unique(ids)) != len(ids):
            raise ValueError("duplicate ids in one indexing batch")
        start = 0
        while start < len(ids):
            last = self._open_shard()
            stop = min(len(ids), start + self.manifest.shard_size - (last.count if last else 0))
            piece = ids[start:stop], vectors[start:stop]
            if last is not None:
                self._commit(self.shards[:-1] + [self._extend_shard(last, *piece)], [last])
            else:
                self._commit(self.shards + [self._write_shard(*piece, self.refine_dtype)], [])
            _debug_point("before-catalog")
            _insert_rows(self.db, rows[start:stop])
            self.manifest.images = self.db[IMAGES].count
            write_manifest(self.index_dir, self.manifest)
            start = stop
        self._pending_ids.clear()
        self._pending_vectors.clear()
        self._pending_rows.clear()
        self.stats.write_seconds += time.perf_counter() - started
        _debug_point("after-checkpoint")

    def finish(self) -> None:
        """Flush, and train if this run was to train but never reached its sample size."""
        self.flush()
        if self._target is not None:
            target = self._target
            if not self.manifest.settings.get("index_factory") and not self._forced:
                target = choose_factory(self.count, self.manifest.dim)  # fewer vectors than expected
            self._target = None
            if self.count and (target != self.manifest.factory or self._forced):
                self._target, self._target_for = target, self.count
                self._train()
            if self._target is not None:
                self.note(
                    f"kept {self.manifest.factory}: {self._target} needs at least {self._train_at:,} "
                    f"vectors to train, the index has {self.count:,}; the next run that has them trains it"
                )
                self._target = None
        self.manifest.images = self.db[IMAGES].count
        write_manifest(self.index_dir, self.manifest)

    def _open_shard(self) -> ShardInfo | None:
        """The last shard if it has room for more vectors."""
        if self.shards and self.shards[-1].count < self.manifest.shard_size:
            return self.shards[-1]
        return None

    def _new_shard_index(self):
        import faiss

        if self.template is None:
            return make_index(FLAT, self.manifest.dim)
        return faiss.clone_index(self.template)

    def _extend_shard(self, shard: ShardInfo, ids: np.ndarray, vectors: np.ndarray) -> ShardInfo:
        import faiss

        dtype = self.refine_dtype
        store = self.store(shard)
        index = faiss.read_index(str(self.index_dir / shard.file))
        all_ids = np.concatenate([np.asarray(store.ids), ids])
        all_vectors = np.concatenate([np.asarray(store.vectors, dtype=dtype), vectors.astype(dtype)])
        return self._write_shard(all_ids, all_vectors, dtype, index=index, new=(ids, vectors))

    def _write_shard(
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
            index, new = self._new_shard_index(), (ids, vectors)
        started = time.perf_counter()
        if new is not None and len(new[0]):
            index = devices.add(index, new[1], new[0], self.device)
        self.stats.add_seconds += time.perf_counter() - started
        number = self._take_number()
        base = f"{SHARDS_DIR}/{number:05d}"
        atomic_write(self.index_dir / f"{base}.faiss", lambda tmp: _write_faiss(index, tmp))
        if reuse is not None and reuse.ids and np.dtype(self.manifest.refine_dtype) == np.dtype(dtype):
            ids_file, vectors_file = reuse.ids, reuse.vectors
        else:
            order = np.argsort(ids, kind="stable")
            ids_file, vectors_file = f"{base}.ids.npy", f"{base}.vectors.npy"
            _save_npy(self.index_dir / ids_file, np.ascontiguousarray(ids[order], dtype=np.int64))
            _save_npy(self.index_dir / vectors_file, np.ascontiguousarray(vectors[order], dtype=dtype))
        _debug_point("shard-written")
        return ShardInfo(file=f"{base}.faiss", count=int(index.ntotal), ids=ids_file, vectors=vectors_file)

    def _take_number(self) -> int:
        number = self._next_number
        self._next_number += 1
        return number

    # -- removing --------------------------------------------------------------------------------
    def remove(self, ids: Iterable[int]) -> int:
        """Remove images by id: catalog rows first, then their vectors. Returns rows removed."""
        ids = np.unique(np.asarray(list(ids), dtype=np.int64))
        if not len(ids):
            return 0
        before = self.db[IMAGES].count
        with self.db.conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500].tolist()
                self.db.conn.execute(f"delete from {IMAGES} where id in ({','.join('?' * len(chunk))})", chunk)
        removed = before - self.db[IMAGES].count
        self._drop_vectors(ids)
        return removed

    def _drop_vectors(self, ids: np.ndarray) -> None:
        """Rewrite the shards that hold any of ``ids`` without them (the catalog rows are gone)."""
        import faiss

        keep = [~np.isin(p, ids) for p in self._pending_ids]
        self._pending_ids = [p[k] for p, k in zip(self._pending_ids, keep)]
        self._pending_vectors = [p[k] for p, k in zip(self._pending_vectors, keep)]
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
            shards.append(
                self._write_shard(
                    np.asarray(store.ids)[kept], np.asarray(store.vectors)[kept], self.refine_dtype, index=index
                )
            )
        if old:
            self._commit(shards, old)

    # -- committing and repairing ----------------------------------------------------------------
    def _commit(self, shards: list[ShardInfo], old: list[ShardInfo]) -> None:
        """Switch the manifest to ``shards`` (files already durable), then delete what it dropped."""
        _debug_point("before-manifest")
        self.manifest.shards = shards
        self.manifest.format_version = FORMAT_VERSION
        write_manifest(self.index_dir, self.manifest)
        referenced = self._referenced()
        for shard in old:
            for name in (shard.file, shard.ids, shard.vectors):
                if name and name not in referenced:
                    (self.index_dir / name).unlink(missing_ok=True)

    def _referenced(self) -> set[str]:
        return {name for s in self.shards for name in (s.file, s.ids, s.vectors) if name}

    def _recover(self, upgrade: bool) -> None:
        """Undo what an interrupted run left: stray files, a stale trained.faiss, orphan vectors."""
        shard_dir = self.index_dir / SHARDS_DIR
        shard_dir.mkdir(exist_ok=True)
        referenced = self._referenced()
        numbers = [-1]
        for path in list(shard_dir.iterdir()) + list(self.index_dir.glob(".*.tmp")):
            name = f"{SHARDS_DIR}/{path.name}"
            match = _SHARD_FILE.match(path.name)
            if match:
                numbers.append(int(match.group(1)))
            if name not in referenced and (match or path.name.endswith(".tmp")):
                path.unlink(missing_ok=True)
        self._next_number = max(numbers) + 1
        if upgrade:
            self._upgrade_v1()
        self._load_template()
        self._drop_orphans()

    def _upgrade_v1(self) -> None:
        """Format 1 (one IDMap2(Flat) shard, no refine files) -> format 2, nothing re-embedded."""
        import faiss

        old = list(self.shards)
        shards = []
        for shard in old:
            index = faiss.read_index(str(self.index_dir / shard.file))
            ids = faiss.vector_to_array(index.id_map).astype(np.int64)
            vectors = index.index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, self.manifest.dim))
            for start in range(0, len(ids), self.manifest.shard_size):
                stop = start + self.manifest.shard_size
                shards.append(self._write_shard(ids[start:stop], vectors[start:stop], np.float32))
        self.manifest.factory, self.manifest.refine_dtype = FLAT, "float32"
        self.manifest.settings.setdefault("refine_factor", 1)
        self._commit(shards, old)
        self.note(f"upgraded {self.index_dir} to index format {FORMAT_VERSION}")

    def _load_template(self) -> None:
        import faiss

        if self.manifest.trained is None:
            self.template = None
            return
        path = self.index_dir / self.manifest.trained
        data = path.read_bytes() if path.exists() else b""
        if data and _sha256_bytes(data) == self.manifest.trained_sha256:
            self.template = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
            return
        if not self.shards:  # interrupted right after training: nothing was added, train again
            self.manifest.factory, self.manifest.trained, self.manifest.trained_sha256 = FLAT, None, None
            self.template = None
            return
        # an interrupted retrain: every shard holds the trained quantizer; emptied, one is the template
        template = faiss.read_index(str(self.index_dir / self.shards[0].file))
        template.reset()
        data = _serialize(template)
        atomic_write_bytes(path, data)
        self.manifest.trained_sha256 = _sha256_bytes(data)
        write_manifest(self.index_dir, self.manifest)
        self.template = template

    def _drop_orphans(self) -> None:
        """Vectors whose catalog rows never got written (interrupted run) are removed."""
        if not self.shards:
            return
        known = np.fromiter((r["id"] for r in self.db.query(f"select id from {IMAGES}")), dtype=np.int64)
        orphans = [
            np.asarray(store.ids)[~np.isin(np.asarray(store.ids), known)]
            for store in (self.store(s) for s in self.shards)
        ]
        orphans = np.concatenate(orphans) if orphans else np.zeros(0, np.int64)
        if len(orphans):
            self._drop_vectors(orphans)
            self.note(f"dropped {len(orphans)} vectors an interrupted run left without catalog rows")


def _check_new_directory(index_dir: Path) -> None:
    if index_dir.exists() and not index_dir.is_dir():
        raise IncompatibleIndex(f"{index_dir} exists and is not a directory")
    if index_dir.exists() and any(
        p.name not in (CATALOG, LOCK, SHARDS_DIR) and not p.name.endswith(".tmp") for p in index_dir.iterdir()
    ):
        # never write an index into a folder of someone's other files
        raise IncompatibleIndex(f"{index_dir} is not empty and holds no babelsearch index; choose another --index")


def _lock(index_dir: Path):
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one run at a time is then up to the user
        return None
    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise IndexBusy(f"another `babelsearch index` run is writing {index_dir}; wait for it to finish") from None
    return fd


def _unlock(fd) -> None:
    if fd is not None:
        os.close(fd)  # closing releases the flock


def _insert_rows(db, rows: list[dict]) -> None:
    values = [tuple(row.get(c) for c in CATALOG_COLUMNS) for row in rows]
    marks = ",".join("?" * len(CATALOG_COLUMNS))
    with db.conn:
        db.conn.executemany(f"insert into {IMAGES} ({','.join(CATALOG_COLUMNS)}) values ({marks})", values)


def _normalized(vectors: np.ndarray) -> np.ndarray:
    from babelsearch.engine.encoders import normalize_rows

    return normalize_rows(np.asarray(vectors, dtype=np.float32))


def _serialize(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def _write_faiss(index, path: Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save(path) would append ".npy" to the name
            np.save(fh, array)

    atomic_write(path, write)


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_debug_hits: dict[str, int] = {}


def _debug_point(name: str) -> None:
    """Crash tests: ``BABELSEARCH_DEBUG_KILL=POINT:N`` kills the process (SIGKILL) at the N-th POINT."""
    spec = os.environ.get(DEBUG_KILL_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _debug_hits[name] = _debug_hits.get(name, 0) + 1
    if _debug_hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
