"""The indexing pipeline that the local build and the Ray build share: decode -> embed -> add.

indexer/build.py (one process) and indexer/distributed.py with indexer/ray_staging.py (Ray) run the
same steps: decode images in worker threads (``decode_all``), add the vectors in input order with the
writer's ids and durable checkpoints (``add_embedded``), count progress (``progress_bar``) and say
what the run did (``IndexReport``, ``fill_report``); indexer/embeddings.py opens its writer and
reports the same way. They live here, below all of them, so the Ray side never imports build.py
(build imports the Ray side, lazily, when a run asks for Ray).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from babelsearch.engine.catalog import photo_date
from babelsearch.engine.encoders import DEFAULT_MODEL
from babelsearch.engine.images import MAX_FILE_BYTES

from .decode import Decoded, Failed, decode_image
from .files import DEFAULT_LOCK_WAIT
from .writer import IndexWriter

CHECKPOINT_EVERY = 4096  # images between durable saves of a long run


@dataclass
class IndexReport:
    """What one indexing run did."""

    index_dir: Path
    found: int = 0
    indexed: int = 0
    unchanged: int = 0
    changed: int = 0
    removed: int = 0
    skipped: list[Failed] = field(default_factory=list)
    seconds: float = 0.0
    factory: str = ""
    train_seconds: float = 0.0
    add_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    reused: int = 0  # Ray builds: images an interrupted run had embedded, taken from its staging
    workers: dict[str, tuple[int, float]] = field(default_factory=dict)  # Ray worker -> (images, busy s)

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"indexed {self.indexed}, unchanged {self.unchanged}, skipped {len(self.skipped)}, "
            f"changed {self.changed}, removed {self.removed}, "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} images/s"
        )
        if self.workers:
            rates = ", ".join(f"{name} {n / s if s > 0 else 0.0:.1f}" for name, (n, s) in sorted(self.workers.items()))
            text += f"; {len(self.workers)} Ray workers (images/s each): {rates}"
        return text


@dataclass
class IndexOptions:
    """How the index is laid out and built (see indexer/factory.py for the defaults' reasons)."""

    shard_size: int | None = None  # vectors per shard (None: the index's own, else 262,144)
    index_factory: str | None = None  # faiss factory string (None: chosen from collection size)
    device: str = "auto"  # where faiss trains and adds: auto, cpu, cuda
    retrain: bool = False  # retrain the quantizer even if the collection has not outgrown it
    max_file_bytes: int = MAX_FILE_BYTES  # larger files are skipped with that reason, never read
    repair: bool = False  # drop damaged or missing shards (and a damaged catalog) and embed their images again
    dim: int | None = None  # Matryoshka models: keep the first dim dimensions (None: the index's own, else all)
    target_recall: float | None = None  # recall@10 the search defaults are tuned to (None: the index's own, else 0.95)
    target_latency: float | None = None  # or: the p50 milliseconds to tune to, at the highest recall within it
    lock_wait: float = DEFAULT_LOCK_WAIT  # seconds to wait for another run writing the index, then IndexBusy


def open_writer(
    index_dir: Path,
    model: str | None,
    options: IndexOptions,
    dim: int | None = None,
    default_model: str = DEFAULT_MODEL,
    writer_class: type[IndexWriter] = IndexWriter,
) -> IndexWriter:
    """The run's writer (``writer_class``: a Ray build's fills shards on Ray), opened with ``options``."""
    return writer_class.open(
        index_dir,
        model=model,
        dim=dim,
        shard_size=options.shard_size,
        device=options.device,
        default_model=default_model,
        repair=options.repair,
        lock_wait=options.lock_wait,
    )


def fill_report(report: IndexReport, writer: IndexWriter, started: float) -> None:
    """The writer's training and add figures, and the run's wall time since ``started``, into ``report``."""
    report.factory = writer.manifest.factory
    report.train_seconds = writer.stats.train_seconds
    report.add_seconds = writer.stats.add_seconds
    report.notes = list(writer.stats.notes)
    report.seconds = time.perf_counter() - started


def add_embedded(
    writer: IndexWriter,
    batches: Iterable[tuple[list[Decoded | Failed], np.ndarray | None]],
    report: IndexReport,
    bar: Any,
) -> None:
    """Add (batch of decode results in input order, the vectors of its Decoded items) to the writer:
    ids from ``writer.next_id()`` in that order, the catalog rows, a durable save every
    CHECKPOINT_EVERY images. The one add loop of the local and the Ray build, so both give the same
    ids and the same sequence of writes (and so the same training sample)."""
    next_id = writer.next_id()
    since_checkpoint = 0
    for batch, vectors in batches:
        good = [item for item in batch if isinstance(item, Decoded)]
        report.skipped.extend(item for item in batch if isinstance(item, Failed))
        if good:
            assert vectors is not None, "a batch with decoded images comes with their vectors"
            ids = np.arange(next_id, next_id + len(good), dtype=np.int64)
            next_id += len(good)
            now = time.time()
            rows = [
                {
                    "id": int(i),
                    "path": str(item.path),
                    "bytes": item.bytes,
                    "mtime": item.mtime,
                    "sha256": item.sha256,
                    "width": item.width,
                    "height": item.height,
                    "added": now,
                    **photo_date(item.exif_taken_at, item.mtime),
                    "format": item.format,
                    "signature": item.signature,
                }
                for i, item in zip(ids, good)
            ]
            writer.add(ids, vectors, rows)
            report.indexed += len(good)
            since_checkpoint += len(good)
        bar.update(len(batch))
        if since_checkpoint >= CHECKPOINT_EVERY:
            writer.flush()
            since_checkpoint = 0


def decode_all(
    paths: list[Path], short_side: int | None, workers: int | None, lookahead: int = 0, max_bytes: int = MAX_FILE_BYTES
) -> Iterator[Decoded | Failed]:
    """Decode in worker threads, in order, with a bounded look-ahead so memory stays flat.

    ``lookahead`` should cover two batches: the workers then decode the whole next batch while the
    model runs on this one, and the model never waits on decoding (with a window smaller than a
    batch, half of every batch was decoded only after the model had finished the previous one).
    """
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    window = max(workers * 8, lookahead)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        queue: deque = deque()
        it = iter(paths)
        for path in it:
            queue.append(pool.submit(decode_image, path, short_side, max_bytes))
            if len(queue) >= window:
                break
        while queue:
            result = queue.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(decode_image, nxt, short_side, max_bytes))
            yield result


def progress_bar(total: int, enabled: bool) -> Any:
    """The run's bar on stderr, counting images (a disabled one when ``enabled`` is False)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
