"""Index vectors computed elsewhere: ``babelsearch index --embeddings VECTORS.npy [--metadata META.csv]``.

Row i gets id i and the path ``VECTORS.npy#i``, unless META.csv (a header row, then one row per
vector) has an ``id`` and/or a ``path`` column. Rows are L2-normalised like the encoders' outputs.
Re-running with the same or a grown file (under any name) adds the new ids, replaces the ids whose
vector changed (the catalog keeps a sha256 of each row) or, when META gives paths, whose path
changed, and leaves the rest alone; ids that are not in the file are kept (an embeddings file may
be one of several sources).
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from babelsearch.engine.bank import BANK_SETTINGS
from babelsearch.engine.catalog import file_records
from babelsearch.engine.encoders.matryoshka import index_encoder
from babelsearch.engine.errors import SourceError
from babelsearch.engine.layout import PRECOMPUTED_MODEL, expand_home

from .bank_terms import refresh_image_terms
from .pipeline import IndexOptions, IndexReport, fill_report, open_writer, progress_bar
from .writer import IndexWriter

ADD_CHUNK = 65_536


def index_embeddings(
    vectors: str | os.PathLike,
    index_dir: str | os.PathLike,
    metadata: str | os.PathLike | None = None,
    model: str | None = None,
    options: IndexOptions | None = None,
    progress: bool = False,
) -> IndexReport:
    """Add the rows of a .npy matrix (n, dim) to ``index_dir``; see the module doc for ids and paths."""
    started = time.perf_counter()
    options = options or IndexOptions()
    index_dir = Path(index_dir)
    vectors_path = expand_home(vectors).resolve()
    array = load_vectors(vectors_path)
    ids, given_paths = read_metadata(metadata, len(array))
    paths = given_paths or [f"{vectors_path}#{i}" for i in ids.tolist()]
    writer = open_writer(index_dir, model, options, dim=array.shape[1], default_model=PRECOMPUTED_MODEL)
    report = IndexReport(index_dir=index_dir, found=len(array))
    try:
        hashes = row_hashes(array)
        known = {r["id"]: r for r in file_records(writer.db)}
        by_path = {r["path"]: r["id"] for r in known.values()}
        todo, replaced = [], set()
        for row, (image_id, path, digest) in enumerate(zip(ids.tolist(), paths, hashes)):
            old = known.get(image_id)
            if old is not None and old["sha256"] == digest and (given_paths is None or old["path"] == path):
                continue
            todo.append(row)
            if old is not None:
                replaced.add(image_id)
            if by_path.get(path, image_id) != image_id:
                replaced.add(by_path[path])  # the path moves to another id
        report.unchanged = len(array) - len(todo)
        report.changed = len(replaced)
        writer.remove(replaced)
        writer.set_targets(options.target_recall, options.target_latency)
        writer.plan(writer.count + len(todo), options.index_factory, options.retrain, extra=array if todo else None)
        rows_to_add = np.asarray(todo, dtype=np.int64)
        bar = progress_bar(len(rows_to_add), progress)
        try:
            for start in range(0, len(rows_to_add), ADD_CHUNK):
                rows = rows_to_add[start : start + ADD_CHUNK]
                now = time.time()
                catalog_rows = [{"id": int(ids[r]), "path": paths[r], "sha256": hashes[r], "added": now} for r in rows]
                writer.add(ids[rows], np.asarray(array[rows], dtype=np.float32), catalog_rows)
                report.indexed += len(rows)
                bar.update(len(rows))
        finally:
            bar.close()
        writer.finish()
        _refresh_terms(writer)
    finally:
        writer.close()
    fill_report(report, writer, started)
    return report


def _refresh_terms(writer: IndexWriter) -> None:
    """The new vectors' margin terms, where the index keeps a query bank (it has a text model then)."""
    manifest = writer.manifest
    if BANK_SETTINGS in manifest.settings and manifest.model != PRECOMPUTED_MODEL:
        refresh_image_terms(writer.index_dir, manifest, writer.db, index_encoder(manifest.model, manifest.settings))


def load_vectors(path: Path) -> np.ndarray:
    """The matrix in a .npy file, memory-mapped; anything else is refused with the reason."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise SourceError(f"{path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise SourceError(f"{path} is not a .npy array file ({exc})") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating) or array.shape[1] < 1:
        raise SourceError(f"{path} must hold a 2-d float matrix (n, dim), not {array.dtype} {array.shape}")
    return array


def read_metadata(metadata: str | os.PathLike | None, n: int) -> tuple[np.ndarray, list[str] | None]:
    """(ids, paths) for n rows from META.csv's ``id``/``path`` columns; ids 0..n-1 and None without."""
    ids = np.arange(n, dtype=np.int64)
    paths: list[str] | None = None
    if metadata is not None:
        meta = expand_home(metadata)
        try:
            with open(meta, newline="", encoding="utf-8-sig") as fh:
                table = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"cannot read metadata {meta}: {exc}") from None
        if len(table) != n:
            raise SourceError(f"{meta} has {len(table)} rows, the vectors file has {n}")
        columns = {c.strip().lower(): c for c in (table[0].keys() if table else []) if c}
        if "id" in columns:
            try:
                ids = np.array([int(row[columns["id"]]) for row in table], dtype=np.int64)
            except (TypeError, ValueError) as exc:
                raise SourceError(f"{meta}: the id column must hold integers ({exc})") from None
            if (ids < 0).any() or len(np.unique(ids)) != n:
                raise SourceError(f"{meta}: ids must be unique and not negative")
        if "path" in columns:
            paths = [(row[columns["path"]] or "").strip() for row in table]
            if any(not p for p in paths) or len(set(paths)) != n:
                raise SourceError(f"{meta}: paths must be unique and not empty")
    return ids, paths


def row_hashes(array: np.ndarray) -> list[str]:
    """sha256 of each row's float32 bytes (how a changed vector is recognised); NaN/inf refused."""
    hashes: list[str] = []
    for start in range(0, len(array), ADD_CHUNK):
        block = np.ascontiguousarray(array[start : start + ADD_CHUNK], dtype=np.float32)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise SourceError(f"row {start + int(np.flatnonzero(bad)[0])} holds NaN or infinity")
        hashes.extend(hashlib.sha256(row.tobytes()).hexdigest() for row in block)
    return hashes
