"""Build or extend an index directory from image files.

Write order keeps every interruption safe: shard file (atomic) -> catalog rows (one transaction) ->
manifest (atomic, last). A vector without a catalog row is never shown and is dropped by the next
run; a catalog row is only written once its vector is on disk.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from engine.bank import update_image_terms
from engine.catalog import IMAGES, ensure_schema, open_catalog
from engine.encoders import DEFAULT_MODEL, Encoder, get_encoder
from engine.errors import IncompatibleIndex
from engine.layout import (
    CATALOG,
    MANIFEST,
    SHARDS_DIR,
    Manifest,
    ShardInfo,
    atomic_write_bytes,
    check_model,
    read_manifest,
    write_manifest,
)

from .decode import Decoded, Failed, decode_image
from .sources import collect_images

CHECKPOINT_EVERY = 4096  # images between durable saves of a long run


@dataclass
class IndexReport:
    """What one indexing run did."""

    index_dir: Path
    found: int = 0
    indexed: int = 0
    unchanged: int = 0
    skipped: list[Failed] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"indexed {self.indexed}, unchanged {self.unchanged}, skipped {len(self.skipped)}, "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} images/s"
        )


def build_index(
    sources: Iterable[str | os.PathLike],
    index_dir: str | os.PathLike,
    model: str | None = None,
    batch_size: int = 32,
    workers: int | None = None,
    progress: bool = False,
    encoder: Encoder | None = None,
    query_bank: list[str | os.PathLike] | None = None,
) -> IndexReport:
    """Index every image under ``sources`` into ``index_dir`` (created, or extended if it exists).

    ``query_bank``: user bank files for margin reranking (None keeps the index's; see engine.bank).
    """
    started = time.perf_counter()
    index_dir = Path(index_dir)
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    paths = collect_images(sources)
    manifest = _open_or_create(index_dir, model, encoder)
    encoder = encoder or get_encoder(manifest.model)
    if encoder.dim != manifest.dim:
        raise IncompatibleIndex(f"model {encoder.name!r} has dim {encoder.dim}, index has {manifest.dim}")

    db = open_catalog(index_dir)
    ensure_schema(db)
    known = {row["path"] for row in db.query(f"select path from {IMAGES}")}
    todo = [p for p in paths if str(p) not in known]
    report = IndexReport(index_dir=index_dir, found=len(paths), unchanged=len(paths) - len(todo))

    shard = _load_flat_shard(index_dir, manifest, db)
    next_id = max(_max_id(db), int(_shard_ids(shard).max()) if shard.ntotal else -1) + 1
    pending_rows: list[dict] = []

    def checkpoint() -> None:
        _save_flat_shard(index_dir, manifest, shard)
        if pending_rows:
            with db.conn:
                db[IMAGES].insert_all(pending_rows)
            pending_rows.clear()
        manifest.images = db[IMAGES].count
        write_manifest(index_dir, manifest)

    bar = _progress_bar(len(todo), progress)
    short_side = getattr(encoder, "preprocess_short_side", None)
    since_checkpoint = 0
    try:
        for batch in _batches(_decode_all(todo, short_side, workers), batch_size):
            good = [item for item in batch if isinstance(item, Decoded)]
            report.skipped.extend(item for item in batch if isinstance(item, Failed))
            if good:
                vectors = encoder.encode_images([item.image for item in good])
                ids = np.arange(next_id, next_id + len(good), dtype=np.int64)
                next_id += len(good)
                shard.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
                now = time.time()
                pending_rows.extend(
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
                )
                report.indexed += len(good)
                since_checkpoint += len(good)
            bar.update(len(batch))
            if since_checkpoint >= CHECKPOINT_EVERY:
                checkpoint()
                since_checkpoint = 0
        checkpoint()
    finally:
        bar.close()
        db.close()
    update_image_terms(index_dir, encoder, bank_files=query_bank)  # margin terms of the new images
    report.seconds = time.perf_counter() - started
    return report


def _open_or_create(index_dir: Path, model: str | None, encoder: Encoder | None) -> Manifest:
    if (index_dir / MANIFEST).exists():
        manifest = read_manifest(index_dir)
        check_model(manifest, model or (encoder.name if encoder else None), index_dir)
        return manifest
    if index_dir.exists() and not index_dir.is_dir():
        raise IncompatibleIndex(f"{index_dir} exists and is not a directory")
    if index_dir.exists() and any(index_dir.iterdir()) and not (index_dir / CATALOG).exists():
        # never write an index into a folder of someone's other files
        raise IncompatibleIndex(f"{index_dir} is not empty and holds no babelsearch index; choose another --index")
    encoder = encoder or get_encoder(model or DEFAULT_MODEL)
    index_dir.mkdir(parents=True, exist_ok=True)
    return Manifest(model=model or encoder.name, dim=encoder.dim)


def _load_flat_shard(index_dir: Path, manifest: Manifest, db):
    """The single exact shard, with vectors whose catalog row never got written dropped."""
    import faiss

    if manifest.shards:
        shard = faiss.read_index(str(index_dir / manifest.shards[0].file))
    else:
        shard = faiss.IndexIDMap2(faiss.IndexFlatIP(manifest.dim))
    if shard.ntotal:
        ids = _shard_ids(shard)
        known = {row["id"] for row in db.query(f"select id from {IMAGES}")}
        orphans = np.array([i for i in ids if int(i) not in known], dtype=np.int64)
        if len(orphans):
            shard.remove_ids(orphans)
    return shard


def _save_flat_shard(index_dir: Path, manifest: Manifest, shard) -> None:
    import faiss

    name = f"{SHARDS_DIR}/00000.faiss"
    atomic_write_bytes(index_dir / name, faiss.serialize_index(shard).tobytes())
    manifest.factory = "Flat"
    manifest.shards = [ShardInfo(file=name, count=int(shard.ntotal))]


def _shard_ids(shard) -> np.ndarray:
    import faiss

    return faiss.vector_to_array(shard.id_map).astype(np.int64)


def _max_id(db) -> int:
    row = next(db.query(f"select max(id) as m from {IMAGES}"))
    return -1 if row["m"] is None else int(row["m"])


def _decode_all(paths: list[Path], short_side: int | None, workers: int | None) -> Iterator[Decoded | Failed]:
    """Decode in worker threads, in order, with a bounded look-ahead so memory stays flat."""
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    window = workers * 8
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
