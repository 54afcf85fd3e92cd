"""Read access to ``catalog.db``: image rows by id, in the order asked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

from .layout import CATALOG

IMAGES = "images"


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
        db[IMAGES].create(
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
        db[IMAGES].create_index(["path"], unique=True)


def rows_by_ids(db: sqlite_utils.Database, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Rows for the given ids as {id: row}; ids without a row are simply absent."""
    wanted = sorted({int(i) for i in ids})
    found: dict[int, dict[str, Any]] = {}
    # SQLite caps bound variables; 500 at a time stays far below any build's limit.
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in db.query(f"select * from {IMAGES} where id in ({marks})", chunk):
            found[row["id"]] = row
    return found


def count_images(db: sqlite_utils.Database) -> int:
    return db[IMAGES].count if IMAGES in db.table_names() else 0
