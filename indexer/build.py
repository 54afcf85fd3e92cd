"""Build or extend an index directory from image files.

A run makes the index match its sources: new images are embedded and added, changed ones (size or
mtime differ and the content hash too) are re-embedded under a fresh id, and images whose files
are gone are removed, but only within this run's sources (a folder given now, or a file listed
now), so indexing another folder or an unmounted disk never removes anything. The order of writes
that makes every interruption safe is IndexWriter's (indexer/writer.py); everything a run writes,
the query-bank terms included, is written under the one index lock.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from babelsearch.engine.catalog import file_records, update_file_stats
from babelsearch.engine.encoders import DEFAULT_MODEL, Encoder, get_encoder
from babelsearch.engine.layout import MANIFEST

from .bank_terms import refresh_image_terms
from .decode import Decoded, Failed, decode_image
from .sources import collect_images
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

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"indexed {self.indexed}, unchanged {self.unchanged}, skipped {len(self.skipped)}, "
            f"changed {self.changed}, removed {self.removed}, "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} images/s"
        )


@dataclass
class IndexOptions:
    """How the index is laid out and built (see indexer/factory.py for the defaults' reasons)."""

    shard_size: int | None = None  # vectors per shard (None: the index's own, else 262,144)
    index_factory: str | None = None  # faiss factory string (None: chosen from collection size)
    device: str = "auto"  # where faiss trains and adds: auto, cpu, cuda
    retrain: bool = False  # retrain the quantizer even if the collection has not outgrown it


def build_index(
    sources: Iterable[str | os.PathLike],
    index_dir: str | os.PathLike,
    model: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = False,
    encoder: Encoder | None = None,
    options: IndexOptions | None = None,
    query_bank: list[str | os.PathLike] | None = None,
) -> IndexReport:
    """Make ``index_dir`` (created, or brought up to date) index every image under ``sources``.

    ``query_bank``: user bank files for margin reranking (None keeps the index's; see engine.bank).
    """
    started = time.perf_counter()
    options = options or IndexOptions()
    index_dir = Path(index_dir)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    source_paths = [Path(s).expanduser() for s in sources]
    paths = collect_images(source_paths)
    asked = model if model is not None else (encoder.name if encoder is not None else None)
    if encoder is None and not (index_dir / MANIFEST).exists():
        # a new index has no model of its own to read: a bad spec fails before any file is made
        encoder = get_encoder(asked or DEFAULT_MODEL)
    writer = open_writer(index_dir, asked, options)  # reads the manifest and checks the model, once
    report = IndexReport(index_dir=index_dir, found=len(paths))
    try:
        encoder = encoder or get_encoder(writer.manifest.model)
        writer.use_encoder(encoder)
        todo, gone, changed = _compare_with_catalog(writer.db, paths, source_paths)
        report.unchanged = len(paths) - len(todo)
        report.changed = len(changed)
        report.removed = writer.remove(gone + changed) - len(changed)
        writer.plan(writer.count + len(todo), options.index_factory, options.retrain)
        _embed_and_add(writer, todo, encoder, batch_size, workers, progress, report)
        writer.finish()
        # the margin terms of the new images, still under the lock and with the writer's manifest
        refresh_image_terms(writer.index_dir, writer.manifest, writer.db, encoder, bank_files=query_bank)
    finally:
        writer.close()
    _fill_report(report, writer, started)
    return report


def open_writer(
    index_dir: Path,
    model: str | None,
    options: IndexOptions,
    dim: int | None = None,
    default_model: str = DEFAULT_MODEL,
) -> IndexWriter:
    return IndexWriter.open(
        index_dir,
        model=model,
        dim=dim,
        shard_size=options.shard_size,
        device=options.device,
        default_model=default_model,
    )


def _fill_report(report: IndexReport, writer: IndexWriter, started: float) -> None:
    report.factory = writer.manifest.factory
    report.train_seconds = writer.stats.train_seconds
    report.add_seconds = writer.stats.add_seconds
    report.notes = list(writer.stats.notes)
    report.seconds = time.perf_counter() - started


def _compare_with_catalog(db, paths: list[Path], sources: list[Path]) -> tuple[list[Path], list[int], list[int]]:
    """(paths to embed, ids whose files are gone, ids whose files changed)."""
    known = {row["path"]: row for row in file_records(db)}
    todo: list[Path] = []
    changed: list[int] = []
    touched: list[tuple] = []
    for path in paths:
        row = known.get(str(path))
        if row is None:
            todo.append(path)
            continue
        try:
            stat = path.stat()
        except OSError:
            continue  # gone since it was listed: handled with the others below
        if row["bytes"] == stat.st_size and row["mtime"] == stat.st_mtime:
            continue
        if row["sha256"] and _file_sha256(path) == row["sha256"]:
            touched.append((stat.st_size, stat.st_mtime, row["id"]))  # same content, new mtime
            continue
        changed.append(row["id"])
        todo.append(path)
    if touched:
        update_file_stats(db, touched)
    folders = [str(s.resolve()) + os.sep for s in sources if s.is_dir()]
    listed = {str(p) for p in paths}
    gone = [
        row["id"]
        for path, row in known.items()
        if (path in listed or path.startswith(tuple(folders))) and not os.path.exists(path)
    ]
    return todo, gone, changed


def _file_sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _embed_and_add(
    writer: IndexWriter,
    todo: list[Path],
    encoder: Encoder,
    batch_size: int,
    workers: int | None,
    progress: bool,
    report: IndexReport,
) -> None:
    next_id = writer.next_id()
    bar = _progress_bar(len(todo), progress)
    short_side = getattr(encoder, "preprocess_short_side", None)
    since_checkpoint = 0
    try:
        for batch in _batches(_decode_all(todo, short_side, workers, lookahead=2 * batch_size), batch_size):
            good = [item for item in batch if isinstance(item, Decoded)]
            report.skipped.extend(item for item in batch if isinstance(item, Failed))
            if good:
                vectors = encoder.encode_images([item.image for item in good])
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
    finally:
        bar.close()


def _decode_all(
    paths: list[Path], short_side: int | None, workers: int | None, lookahead: int = 0
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
            queue.append(pool.submit(decode_image, path, short_side))
            if len(queue) >= window:
                break
        while queue:
            result = queue.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(decode_image, nxt, short_side))
            yield result


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, disable=not enabled, dynamic_ncols=True)
