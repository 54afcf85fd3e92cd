"""``catalog.db``: the one module that knows its schema and holds its SQL.

Tables: ``images`` (one row per image; row id == FAISS id) and ``margin_terms`` (an image's r(y)
per k in ``rerank.MARGIN_KS``, float32 bytes). Readers use the read functions; the indexer, which
holds the index lock, uses the writing ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from .layout import CATALOG

IMAGES = "images"
TERMS_TABLE = "margin_terms"
IMAGE_COLUMNS = ("id", "path", "bytes", "mtime", "sha256", "width", "height", "added")
# SQLite caps bound variables per statement (999 in old builds); 500 stays far below any limit
_CHUNK = 500


def open_catalog(index_dir: str | os.PathLike, readonly: bool = False) -> sqlite_utils.Database:
    path = Path(index_dir) / CATALOG
    if readonly:
        import sqlite3

        # check_same_thread off: the web server answers from several threads, reads only.
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        return sqlite_utils.Database(conn)
    return sqlite_utils.Database(path)


def ensure_schema(db: sqlite_utils.Database) -> None:
    if IMAGES not in db.table_names():
        db.table(IMAGES).create(
            {
                "id": int,
                "path": str,
                "bytes": int,
                "mtime": float,
                "sha256": str,
                "width": int,
                "height": int,
                "added": float,
            },
            pk="id",
        )
        db.table(IMAGES).create_index(["path"], unique=True)


def ensure_terms_table(db: sqlite_utils.Database) -> None:
    if TERMS_TABLE not in db.table_names():
        db.table(TERMS_TABLE).create({"id": int, "terms": bytes}, pk="id")


def id_chunks(ids: Iterable[int], size: int = _CHUNK) -> Iterator[tuple[list[int], str]]:
    """The ids (sorted, each once) in pieces small enough to bind, each with its ``?,?,...`` marks."""
    wanted = sorted({int(i) for i in ids})
    for start in range(0, len(wanted), size):
        chunk = wanted[start : start + size]
        yield chunk, ",".join("?" * len(chunk))


# -- images: read ---------------------------------------------------------------------------------
def rows_by_ids(db: sqlite_utils.Database, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Rows for the given ids as {id: row}; ids without a row are simply absent."""
    found: dict[int, dict[str, Any]] = {}
    for chunk, marks in id_chunks(ids):
        for row in db.query(f"select * from {IMAGES} where id in ({marks})", chunk):
            found[row["id"]] = row
    return found


def count_images(db: sqlite_utils.Database) -> int:
    return db[IMAGES].count if IMAGES in db.table_names() else 0


def max_image_id(db: sqlite_utils.Database) -> int:
    """The highest id in the catalog, -1 when it is empty."""
    row = next(db.query(f"select max(id) as m from {IMAGES}"))
    return -1 if row["m"] is None else int(row["m"])


def image_ids(db: sqlite_utils.Database) -> np.ndarray:
    """Every id in the catalog (int64, in no particular order)."""
    return np.fromiter((row[0] for row in db.execute(f"select id from {IMAGES}")), dtype=np.int64)


def file_records(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """(id, path, bytes, mtime, sha256) of every image: what tells an unchanged file or vector."""
    return list(db.query(f"select id, path, bytes, mtime, sha256 from {IMAGES}"))


def ids_by_path(db: sqlite_utils.Database) -> dict[str, int]:
    """{path: id} of every image."""
    return {path: image_id for image_id, path in db.execute(f"select id, path from {IMAGES}")}


# -- images: write --------------------------------------------------------------------------------
def insert_images(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> None:
    """Insert rows (dicts with any of IMAGE_COLUMNS) in one transaction."""
    values = [tuple(row.get(c) for c in IMAGE_COLUMNS) for row in rows]
    marks = ",".join("?" * len(IMAGE_COLUMNS))
    with db.conn:
        db.conn.executemany(f"insert into {IMAGES} ({','.join(IMAGE_COLUMNS)}) values ({marks})", values)


def delete_images(db: sqlite_utils.Database, ids: Iterable[int]) -> int:
    """Delete the rows of ``ids`` in one transaction; returns how many there were."""
    before = db[IMAGES].count
    with db.conn:
        for chunk, marks in id_chunks(ids):
            db.conn.execute(f"delete from {IMAGES} where id in ({marks})", chunk)
    return before - db[IMAGES].count


def update_file_stats(db: sqlite_utils.Database, stats: list[tuple[int, float, int]]) -> None:
    """New (bytes, mtime) for (bytes, mtime, id) triples: files touched but not changed."""
    with db.conn:
        db.conn.executemany(f"update {IMAGES} set bytes = ?, mtime = ? where id = ?", stats)


# -- margin terms ---------------------------------------------------------------------------------
def image_terms(db: sqlite_utils.Database, ids: Iterable[int]) -> dict[int, np.ndarray]:
    """{id: stored r(y) per k in MARGIN_KS} for the ids that have them."""
    if TERMS_TABLE not in db.table_names():
        return {}
    found: dict[int, np.ndarray] = {}
    for chunk, marks in id_chunks(i for i in ids if int(i) >= 0):
        for image_id, blob in db.execute(f"select id, terms from {TERMS_TABLE} where id in ({marks})", chunk):
            found[image_id] = np.frombuffer(blob, dtype=np.float32)
    return found


def all_terms(db: sqlite_utils.Database) -> Iterator[np.ndarray]:
    for (blob,) in db.execute(f"select terms from {TERMS_TABLE}"):
        yield np.frombuffer(blob, dtype=np.float32)


def ids_without_terms(db: sqlite_utils.Database) -> list[int]:
    return [row[0] for row in db.execute(f"select id from {IMAGES} where id not in (select id from {TERMS_TABLE})")]


def delete_terms(db: sqlite_utils.Database, stale_only: bool = False) -> None:
    """Delete every image's terms, or (``stale_only``) those of images no longer in the catalog."""
    with db.conn:
        if stale_only:
            db.execute(f"delete from {TERMS_TABLE} where id not in (select id from {IMAGES})")
        else:
            db.execute(f"delete from {TERMS_TABLE}")


def write_terms(db: sqlite_utils.Database, ids: Iterable[int], terms: np.ndarray) -> None:
    """Store (or replace) the terms rows of ``ids`` in one transaction."""
    with db.conn:
        db.conn.executemany(
            f"insert or replace into {TERMS_TABLE} (id, terms) values (?, ?)",
            [(int(i), np.ascontiguousarray(row, dtype=np.float32).tobytes()) for i, row in zip(ids, terms)],
        )
