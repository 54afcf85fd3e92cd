"""When an index (re)trains its quantizer, on what sample, and the rebuild of every shard after it.

A run plans once (``Training.plan``) for the collection it will leave behind; training then happens
as soon as enough vectors are at hand, and ``Training.finish`` settles a run that never got there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from babelsearch.engine.layout import TRAINED, atomic_write_bytes
from babelsearch.engine.shards import RefineStore

from . import device as devices
from .factory import (
    FLAT,
    MIN_POINTS_PER_CENTROID,
    OUTGROWN_FACTOR,
    choose_factory,
    default_search_settings,
    is_lossy,
    make_index,
    min_train_points,
    pq_code_of,
    same_layout,
    train_points,
)
from .files import debug_point, serialize, sha256_bytes

if TYPE_CHECKING:
    from .writer import IndexWriter


class Training:
    """One writer's pending training decision: the factory to train to, and when."""

    def __init__(self, writer: IndexWriter):
        self.writer = writer
        self.target: str | None = None  # factory to (re)train to once enough vectors are in
        self.train_at = 0
        self.target_for = 0
        self.forced = False  # --retrain: train even if the factory stays the same

    def plan(
        self, expected: int, index_factory: str | None = None, retrain: bool = False, extra: np.ndarray | None = None
    ) -> None:
        """Decide the factory for a collection that will hold ``expected`` vectors after this run.

        Training happens as soon as enough vectors are at hand: the index's own plus ``extra``
        (vectors about to be added, e.g. precomputed embeddings), else later, from ``add``.
        """
        writer, manifest = self.writer, self.writer.manifest
        current = manifest.factory
        if index_factory is not None:
            make_index(index_factory, manifest.dim)  # refuses a bad string before any work
            manifest.settings["index_factory"] = index_factory
        requested = manifest.settings.get("index_factory")
        if requested:
            target, reason = requested, "as requested"
            needed = retrain or requested != current
        else:
            target = choose_factory(expected, manifest.dim)
            reason = f"auto for {expected:,} vectors of dim {manifest.dim}"
            if retrain:
                needed = True
            elif current == FLAT:
                needed = target != FLAT
            else:
                needed = expected >= OUTGROWN_FACTOR * max(manifest.trained_for, 1)
                if needed:
                    writer.note(
                        f"the collection ({expected:,} vectors) has outgrown the quantizer trained for "
                        f"{manifest.trained_for:,} (x{OUTGROWN_FACTOR}): retraining as {target}"
                    )
        if not needed:
            if current == FLAT or requested:
                writer.note(f"index factory: {current} ({reason})")
            else:
                writer.note(
                    f"index factory: {current} (trained for {manifest.trained_for:,} vectors; "
                    f"retrained at {OUTGROWN_FACTOR * manifest.trained_for:,})"
                )
            return
        writer.note(f"index factory: {target} ({reason})")
        self.target, self.target_for, self.forced = target, expected, retrain
        wanted = train_points(make_index(target, manifest.dim), writer.device)
        self.train_at = 0 if target == FLAT else min(expected, wanted)
        available = writer.count + (0 if extra is None else len(extra))
        if available >= self.train_at:
            self.train(extra)

    @property
    def due(self) -> bool:
        return self.target is not None and self.writer.count >= self.train_at

    def train(self, extra: np.ndarray | None = None) -> None:
        """Train the target factory on a sample and rebuild every shard from its stored vectors."""
        writer = self.writer
        target, self.target = self.target, None
        if target is None:
            return
        if target == FLAT:
            convert(writer, None, FLAT, self.target_for)
            return
        index = make_index(target, writer.manifest.dim)
        available = writer.count + (0 if extra is None else len(extra))
        if available < min_train_points(index):
            self.target = target  # try again once there are enough
            self.train_at = min_train_points(index)
            return
        import faiss

        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        wanted = min(available, train_points(index, writer.device))
        per_list = wanted / ivf.nlist
        if per_list < MIN_POINTS_PER_CENTROID:
            writer.note(f"training {target} on {wanted:,} vectors ({per_list:.0f} per list; faiss wants >= 39)")
        # we warn once ourselves instead of faiss once per codebook
        ivf.cp.min_points_per_centroid = 1
        if hasattr(ivf, "pq"):
            ivf.pq.cp.min_points_per_centroid = 1
            ivf.do_polysemous_training = False  # polysemous filtering is for L2 codes; we search by IP
        sample = _sample(writer, wanted, extra)
        started = time.perf_counter()
        settings = writer.manifest.settings
        if self._measures_code_size(target):
            from .tuning import DEFAULT_TARGET_RECALL, choose_code_size

            choice = choose_code_size(
                target,
                sample,
                self.target_for,
                float(settings.get("target_recall", DEFAULT_TARGET_RECALL)),
                lambda empty, vectors: devices.train(empty, vectors, writer.device),
                text_queries=_bank_vectors(writer),
            )
            index, target = choice.index, choice.factory
            settings["code_size_note"] = choice.note
            writer.note(choice.note)
        else:
            index = devices.train(index, sample, writer.device)
            settings.pop("code_size_note", None)
        seconds = time.perf_counter() - started
        writer.stats.train_seconds += seconds
        writer.note(f"trained {target} on {wanted:,} vectors in {seconds:.1f} s ({writer.device})")
        convert(writer, index, target, self.target_for)

    def _measures_code_size(self, target: str) -> bool:
        """Whether to measure the code size: an automatic plain IVF,PQ factory tuned for recall."""
        settings = self.writer.manifest.settings
        return (
            not settings.get("index_factory")
            and settings.get("target_latency_ms") is None
            and pq_code_of(target) is not None
        )

    def finish(self) -> None:
        """Train if this run was to train but never reached its sample size; else say why not."""
        if self.target is None:
            return
        writer = self.writer
        target, self.target = self.target, None
        if not writer.manifest.settings.get("index_factory") and not self.forced:
            target = choose_factory(writer.count, writer.manifest.dim)  # fewer vectors than expected
        if writer.count and (not same_layout(target, writer.manifest.factory) or self.forced):
            self.target, self.target_for = target, writer.count
            self.train()
        if self.target is not None:
            writer.note(
                f"kept {writer.manifest.factory}: {self.target} needs at least {self.train_at:,} "
                f"vectors to train, the index has {writer.count:,}; the next run that has them trains it"
            )
            self.target = None


def _bank_vectors(writer: IndexWriter) -> np.ndarray | None:
    """The text vectors of the index's query bank (bank/*.npy) when it keeps one, else None: the
    realistic queries of a text-to-image index."""
    from babelsearch.engine.bank import BANK_DIR, BANK_SETTINGS

    if BANK_SETTINGS not in writer.manifest.settings:
        return None
    parts = []
    for path in sorted((writer.index_dir / BANK_DIR).glob("*.npy")):
        try:
            vectors = np.load(path)
        except (OSError, ValueError):
            continue  # a damaged cache: the held-out image vectors still measure
        if vectors.ndim == 2 and vectors.shape[1] == writer.manifest.dim:
            parts.append(vectors.astype(np.float32, copy=False))
    return np.concatenate(parts) if parts else None


def _sample(writer: IndexWriter, n: int, extra: np.ndarray | None) -> np.ndarray:
    """n vectors drawn evenly at random (seeded) from the shards, pending vectors and extra."""
    from .writer import normalized

    sources: list = [writer.store(s) for s in writer.shards] + list(writer.pending_vectors)
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
            parts.append(normalized(source[rows]))
    return np.concatenate(parts)


def convert(writer: IndexWriter, template, factory: str, trained_for: int) -> None:
    """Rebuild every shard with a new trained template (or as Flat), then commit it all at once."""
    manifest = writer.manifest
    old = list(writer.shards)
    dtype = np.dtype("float16" if is_lossy(factory) else "float32")
    writer.template = template
    new_shards = []
    for shard in old:
        store = writer.store(shard)
        vectors = store.rows(np.arange(len(store)))
        new_shards.append(writer.write_shard(np.asarray(store.ids), vectors, dtype, reuse=shard))
    manifest.factory = factory
    manifest.refine_dtype = dtype.name
    manifest.trained_for = trained_for
    manifest.settings.update(default_search_settings(template, factory))
    if factory == FLAT:
        manifest.settings.pop("nprobe", None)
    manifest.trained = TRAINED if template is not None else None
    manifest.trained_sha256 = sha256_bytes(serialize(template)) if template is not None else None
    writer.commit(new_shards, old)
    if template is not None:
        # after the manifest: a crash in between is repaired from the first shard (see recovery)
        debug_point("before-trained")
        atomic_write_bytes(writer.index_dir / TRAINED, serialize(template))
    else:
        (writer.index_dir / TRAINED).unlink(missing_ok=True)
