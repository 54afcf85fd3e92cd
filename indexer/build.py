"""Build or extend an index directory from image files.

A run makes the index match its sources: new images are embedded and added, changed ones (size or
mtime differ and the content hash too) are re-embedded under a fresh id, and images whose files
are gone are removed, but only within this run's sources (a folder given now, or a file listed
now), so indexing another folder or an unmounted disk never removes anything. The order of writes
that makes every interruption safe is IndexWriter's (indexer/writer.py); everything a run writes,
the query-bank terms included, is written under the one index lock. The decode and add steps, the
options and the report are indexer/pipeline.py's, shared with the Ray build (indexer/distributed.py).
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mode
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from babelsearch.engine.catalog import file_records, update_file_stats
from babelsearch.engine.encoders import DEFAULT_MODEL, Encoder, get_encoder
from babelsearch.engine.encoders.local import canonical_spec
from babelsearch.engine.encoders.matryoshka import TRUNCATE_DIM, truncate_dims
from babelsearch.engine.errors import IncompatibleIndex, InvalidSetting
from babelsearch.engine.images import MAX_FILE_BYTES
from babelsearch.engine.layout import MANIFEST, expand_home

from .bank_terms import refresh_image_terms
from .decode import Decoded
from .pipeline import IndexOptions, IndexReport, add_embedded, decode_all, fill_report, open_writer, progress_bar
from .sources import collect_images
from .writer import IndexWriter

# re-exported: babelsearch/__init__.py names the options and the report from here (they live in pipeline.py)
__all__ = ["IndexOptions", "IndexReport", "build_index"]


def build_index(
    sources: Iterable[str | os.PathLike],
    index_dir: str | os.PathLike,
    model: str | None = None,
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool = False,
    encoder: Encoder | None = None,
    options: IndexOptions | None = None,
    query_bank: list[str | os.PathLike] | None = None,
    ray: str | bool | None = None,
    dim: int | None = None,
) -> IndexReport:
    """Make ``index_dir`` (created, or brought up to date) index every image under ``sources``.

    ``batch_size``: images per model call (None: the encoder's ``image_batch_size``, else 32).
    ``dim`` (or ``options.dim``): keep the first dim dimensions of a Matryoshka model's vectors; recorded
    in the manifest, so searches and later runs use the same; None keeps the index's (new: all of them).

    ``query_bank``: user bank files for margin reranking (None keeps the index's; see engine.bank).
    ``ray``: decode and embed on Ray (indexer/distributed.py): True or "local" starts a local Ray on
    this machine, "auto" or an address joins a running cluster; None or False builds in this process.
    """
    started = time.perf_counter()
    options = options or IndexOptions()
    index_dir = Path(index_dir)
    dim = dim if dim is not None else options.dim
    if batch_size is not None and batch_size < 1:
        raise InvalidSetting("batch_size must be at least 1")
    # the manifest records local: paths absolute, so the index opens from any working directory
    model = canonical_spec(model) if model is not None else None
    runner = None
    if ray is not None and ray is not False:
        from .distributed import RayBuild

        # before anything is read or written: without Ray installed this is the one clear error
        runner = RayBuild(ray, batch_size=batch_size or 32, workers=workers, progress=progress, encoder=encoder)
    source_paths = [expand_home(s) for s in sources]
    paths = collect_images(source_paths)
    asked = model if model is not None else (encoder.name if encoder is not None else None)
    if encoder is None and not (index_dir / MANIFEST).exists():
        # a new index has no model of its own to read: a bad spec fails before any file is made
        encoder = get_encoder(asked or DEFAULT_MODEL)
    # reads the manifest and checks the model, once
    writer = open_writer(index_dir, asked, options, writer_class=runner.writer_class if runner else IndexWriter)
    report = IndexReport(index_dir=index_dir, found=len(paths))
    try:
        encoder = _index_dims(writer, encoder or get_encoder(writer.manifest.model), dim)
        writer.use_encoder(encoder)
        if batch_size is None:
            batch_size = int(encoder.image_batch_size or 32)
            if runner is not None:
                runner.batch_size = batch_size
        if runner is not None:
            runner.start(writer)  # before planning: a retrain's shard rebuild is filled on Ray too
        todo, gone, changed = _compare_with_catalog(writer.db, paths, source_paths)
        report.unchanged = len(paths) - len(todo)
        report.changed = len(changed)
        report.removed = writer.remove(gone + changed) - len(changed)
        writer.set_targets(options.target_recall, options.target_latency)
        writer.plan(writer.count + len(todo), options.index_factory, options.retrain)
        if runner is not None:
            runner.embed_and_add(writer, todo, encoder, report, options.max_file_bytes)
        else:
            _embed_and_add(writer, todo, encoder, batch_size, workers, progress, report, options.max_file_bytes)
        writer.finish()
        # the margin terms of the new images, still under the lock and with the writer's manifest
        refresh_image_terms(writer.index_dir, writer.manifest, writer.db, encoder, bank_files=query_bank)
        if runner is not None:
            runner.committed(writer)  # everything staged is in the index now
    finally:
        writer.close()
        if runner is not None:
            runner.close()
    fill_report(report, writer, started)
    return report


def _index_dims(writer: IndexWriter, encoder: Encoder, dim: int | None) -> Encoder:
    """The encoder cut to the index's dimensions: ``dim`` for a new index, the recorded one for an
    existing index (another ``dim`` is refused: its vectors would not fit)."""
    manifest = writer.manifest
    recorded = manifest.settings.get(TRUNCATE_DIM)
    full = int(encoder.full_dim)
    if manifest.dim:  # an existing index: its dimensions are settled
        kept = int(recorded) if recorded else manifest.dim
        if dim is not None and dim != kept:
            raise IncompatibleIndex(
                f"index {writer.index_dir} keeps {kept} dimensions of {manifest.model}, not {dim}; "
                f"run without --dim (or --dim {kept}), or build a new index in another directory"
            )
        dim = int(recorded) if recorded else None
    encoder = truncate_dims(encoder, dim)
    if encoder.dim < full:
        manifest.settings[TRUNCATE_DIM] = encoder.dim
    return encoder


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
        if not stat_mode.S_ISREG(stat.st_mode):  # now a FIFO or a device: never hashed (a read would block)
            changed.append(row["id"])
            todo.append(path)  # the decoder says what it is
            continue
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
        if (path in listed or path.startswith(tuple(folders))) and _is_gone(path)
    ]
    return todo, gone, changed


def _is_gone(path: str) -> bool:
    """Only a file known not to exist is gone: one in a folder that cannot be read (EACCES) is kept."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return not os.path.exists(path)  # a link whose target is gone


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
    max_bytes: int = MAX_FILE_BYTES,
) -> None:
    bar = progress_bar(len(todo), progress)
    short_side = encoder.preprocess_short_side
    try:
        decoded = decode_all(todo, short_side, workers, lookahead=2 * batch_size, max_bytes=max_bytes)
        embedded = (
            (batch, encoder.encode_images([item.image for item in batch if isinstance(item, Decoded)]))
            if any(isinstance(item, Decoded) for item in batch)
            else (batch, None)
            for batch in _batches(decoded, batch_size)
        )
        add_embedded(writer, embedded, report, bar)
    finally:
        bar.close()


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
