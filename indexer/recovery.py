"""Repairs a writer makes when it opens an index: what an interrupted run left, and old formats.

Each repair restores a state a committed manifest describes (see the write order in writer.py):
files no manifest references are deleted, vectors without catalog rows are dropped, a lost or
stale ``trained.faiss`` is rebuilt from a shard, and a format-1 index is rewritten as format 2.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from babelsearch.engine.catalog import image_ids
from babelsearch.engine.errors import IncompatibleIndex
from babelsearch.engine.layout import CATALOG, FORMAT_VERSION, SHARDS_DIR, atomic_write_bytes, write_manifest

from .factory import FLAT
from .files import LOCK, serialize, sha256_bytes

if TYPE_CHECKING:
    from .writer import IndexWriter

_SHARD_FILE = re.compile(r"^(\d{5,})\.(faiss|ids\.npy|vectors\.npy)$")


def check_new_directory(index_dir: Path) -> None:
    """Refuse to start an index where one cannot go."""
    if index_dir.exists() and not index_dir.is_dir():
        raise IncompatibleIndex(f"{index_dir} exists and is not a directory")
    if index_dir.exists() and any(
        p.name not in (CATALOG, LOCK, SHARDS_DIR) and not p.name.endswith(".tmp") for p in index_dir.iterdir()
    ):
        # never write an index into a folder of someone's other files
        raise IncompatibleIndex(f"{index_dir} is not empty and holds no babelsearch index; choose another --index")


def recover(writer: IndexWriter, upgrade: bool) -> None:
    """Undo what an interrupted run left: stray files, a stale trained.faiss, orphan vectors."""
    writer.next_number = remove_strays(writer) + 1
    if upgrade:
        upgrade_v1(writer)
    load_template(writer)
    drop_orphans(writer)


def remove_strays(writer: IndexWriter) -> int:
    """Delete shard and temp files the manifest does not reference; returns the highest shard number seen."""
    shard_dir = writer.index_dir / SHARDS_DIR
    shard_dir.mkdir(exist_ok=True)
    referenced = writer.referenced()
    highest = -1
    for path in list(shard_dir.iterdir()) + list(writer.index_dir.glob(".*.tmp")):
        match = _SHARD_FILE.match(path.name)
        if match:
            highest = max(highest, int(match.group(1)))
        if f"{SHARDS_DIR}/{path.name}" not in referenced and (match or path.name.endswith(".tmp")):
            path.unlink(missing_ok=True)
    return highest


def upgrade_v1(writer: IndexWriter) -> None:
    """Format 1 (one IDMap2(Flat) shard, no refine files) -> format 2, nothing re-embedded."""
    import faiss

    manifest = writer.manifest
    old = list(writer.shards)
    shards = []
    for shard in old:
        index = faiss.read_index(str(writer.index_dir / shard.file))
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        vectors = index.index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, manifest.dim))
        for start in range(0, len(ids), manifest.shard_size):
            stop = start + manifest.shard_size
            shards.append(writer.write_shard(ids[start:stop], vectors[start:stop], np.float32))
    manifest.factory, manifest.refine_dtype = FLAT, "float32"
    manifest.settings.setdefault("refine_factor", 1)
    writer.commit(shards, old)
    writer.note(f"upgraded {writer.index_dir} to index format {FORMAT_VERSION}")


def load_template(writer: IndexWriter) -> None:
    """The trained empty index shards are filled from, checked against the manifest's hash."""
    import faiss

    manifest = writer.manifest
    if manifest.trained is None:
        writer.template = None
        return
    path = writer.index_dir / manifest.trained
    data = path.read_bytes() if path.exists() else b""
    if data and sha256_bytes(data) == manifest.trained_sha256:
        writer.template = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        return
    if not writer.shards:  # interrupted right after training: nothing was added, train again
        manifest.factory, manifest.trained, manifest.trained_sha256 = FLAT, None, None
        writer.template = None
        return
    # an interrupted retrain: every shard holds the trained quantizer; emptied, one is the template
    template = faiss.read_index(str(writer.index_dir / writer.shards[0].file))
    template.reset()
    data = serialize(template)
    atomic_write_bytes(path, data)
    manifest.trained_sha256 = sha256_bytes(data)
    write_manifest(writer.index_dir, manifest)
    writer.template = template


def drop_orphans(writer: IndexWriter) -> None:
    """Vectors whose catalog rows never got written (interrupted run) are removed."""
    if not writer.shards:
        return
    known = image_ids(writer.db)
    stores = [writer.store(s) for s in writer.shards]
    orphans = np.concatenate([np.asarray(s.ids)[~np.isin(np.asarray(s.ids), known)] for s in stores])
    if len(orphans):
        writer.drop_vectors(orphans)
        writer.note(f"dropped {len(orphans)} vectors an interrupted run left without catalog rows")
