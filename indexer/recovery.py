"""Repairs a writer makes when it opens an index: what an interrupted run left, and old formats.

Each repair restores a state a committed manifest describes (see the write order in writer.py):
files no manifest references are deleted, vectors without catalog rows are dropped, a lost or
stale ``trained.faiss`` is rebuilt from a shard, and a format-1 index is rewritten as format 2.

Damage no interruption leaves (a shard file missing or unreadable, a catalog that is not a database)
stops the run with the way out, unless it runs with ``repair``: a damaged shard is then dropped with
its catalog rows, and a damaged catalog is set aside (``catalog.db.damaged``) for a new one, so that
the run embeds those images again from its sources.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from babelsearch.engine.catalog import delete_images, image_ids, probe_catalog
from babelsearch.engine.check import faiss_ids
from babelsearch.engine.errors import IncompatibleIndex, IndexDamaged
from babelsearch.engine.layout import (
    CATALOG,
    CATALOG_HINT,
    FORMAT_VERSION,
    SHARDS_DIR,
    Manifest,
    ShardInfo,
    atomic_write_bytes,
    damaged,
    write_manifest,
)
from babelsearch.engine.shards import open_store, read_shard_index

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


def check_catalog(index_dir: Path, manifest: Manifest, repair: bool) -> str | None:
    """Refuse (IndexDamaged) to write into an existing index whose catalog is missing or damaged; with
    ``repair``, set a damaged one aside so a new one is made. Returns a note of what was repaired."""
    path = index_dir / CATALOG
    try:
        probe_catalog(index_dir)
    except IndexDamaged:
        if not repair:
            raise
    else:
        problem = _quick_check(path)
        if problem is None:
            return None
        if not repair:
            raise damaged(index_dir, CATALOG, problem, CATALOG_HINT)
    if path.exists():
        aside = path.with_name(f"{CATALOG}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(path, aside)
        for suffix in ("-journal", "-wal", "-shm"):  # a journal belongs to the damaged file, not the new one
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        where = f"set aside as {aside.name}"
    else:
        where = "missing"
    return (
        f"repaired: {CATALOG} was damaged ({where}); a new one is made and the "
        f"{sum(s.count for s in manifest.shards)} vectors without rows in it are dropped, so this run "
        "embeds every image of its sources again"
    )


def _quick_check(path: Path) -> str | None:
    """SQLite's quick_check on the catalog (every page read once): None if it is sound."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        verdict = [row[0] for row in conn.execute("pragma quick_check(5)")]
    except sqlite3.DatabaseError as exc:
        return f"cannot be read ({exc})"
    finally:
        conn.close()
    return None if verdict == ["ok"] else f"fails SQLite's integrity check ({'; '.join(verdict)})"


def recover(writer: IndexWriter, upgrade: bool, repair: bool = False) -> None:
    """Undo what an interrupted run left: stray files, a stale trained.faiss, orphan vectors; refuse a
    damaged shard with the way out, or with ``repair`` drop it (see the module doc)."""
    writer.next_number = remove_strays(writer) + 1
    if upgrade:
        upgrade_v1(writer)
    else:
        check_shards(writer, repair)
    load_template(writer)
    drop_orphans(writer)


def shard_problem(writer: IndexWriter, shard: ShardInfo) -> tuple[str, str] | None:
    """(file, what is wrong) for a shard whose files are missing or cannot be used; None if it is sound."""
    for name in (shard.file, shard.ids, shard.vectors):
        if not name or not (writer.index_dir / name).is_file():
            return str(name), "is missing"
    try:
        store = open_store(writer.index_dir, writer.manifest, shard)
        index = read_shard_index(writer.index_dir, writer.manifest, shard, mmap=True)
    except IndexDamaged as exc:
        text = str(exc).partition(" is damaged: ")[2].split("; run `babelsearch index", 1)[0]
        name, _, problem = text.partition(" ")
        return name, problem
    held = faiss_ids(index)  # one pass over the ids: a shard whose id file is another's would lose images
    if held is not None and not np.array_equal(np.sort(held), np.asarray(store.ids)):
        return str(shard.ids), f"holds other ids than {shard.file}"
    return None


def check_shards(writer: IndexWriter, repair: bool) -> None:
    """Every shard the manifest names can be read; else IndexDamaged (naming the first file and the way
    out), or with ``repair`` the damaged shards are dropped from the manifest and their catalog rows
    deleted first (the order of a removal), so this run embeds those images again from its sources."""
    bad = [(shard, found) for shard in writer.shards if (found := shard_problem(writer, shard)) is not None]
    if not bad:
        return
    if not repair:
        name, problem = bad[0][1]
        more = f" (and {len(bad) - 1} more damaged shards)" if len(bad) > 1 else ""
        raise damaged(writer.index_dir, name, problem + more)
    kept = [shard for shard in writer.shards if all(shard is not b for b, _ in bad)]
    kept_ids = [np.asarray(writer.store(shard).ids) for shard in kept]
    held = np.concatenate(kept_ids) if kept_ids else np.zeros(0, np.int64)
    known = image_ids(writer.db)
    lost = known[~np.isin(known, held)]
    delete_images(writer.db, lost.tolist())  # rows first, then the shards: the order of any removal
    writer.commit(kept, [shard for shard, _ in bad])
    names = ", ".join(found[0] for _, found in bad)
    writer.note(
        f"repaired: dropped {len(bad)} damaged shards ({names}) and the {len(lost)} images they held; "
        "this run embeds those of its sources again"
    )


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
    """Vectors whose catalog rows never got written (interrupted run) are removed, and catalog rows
    without a vector (no interruption leaves them; a repaired or damaged shard does) are deleted, so
    that this run embeds their images again instead of keeping them unfindable."""
    known = image_ids(writer.db)
    stores = [writer.store(s) for s in writer.shards]
    held = np.concatenate([np.asarray(s.ids) for s in stores]) if stores else np.zeros(0, np.int64)
    lost = known[~np.isin(known, held)]
    if len(lost):
        delete_images(writer.db, lost.tolist())
        writer.note(f"{len(lost)} catalog rows had no vector; their images are embedded again")
    orphans = held[~np.isin(held, known)]
    if len(orphans):
        writer.drop_vectors(orphans)
        writer.note(f"dropped {len(orphans)} vectors an interrupted run left without catalog rows")
