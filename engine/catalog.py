"""``catalog.db``: the one module that knows its schema and holds its SQL.

Tables: ``images`` (one row per image; row id == FAISS id) and ``margin_terms`` (an image's r(y)
per k in ``rerank.MARGIN_KS``, float32 bytes). Readers use the read functions; the indexer, which
holds the index lock, uses the writing ones.

Paths: a file name that is not valid UTF-8 (bytes such as ``\xff`` from an old disk or archive) reaches
Python as a str with surrogate escapes (``os.fsdecode``), which SQLite text cannot hold. Such a path is
stored as its raw bytes (a BLOB in the ``path`` column, so it stays unique and lossless) and read back as
the same surrogate-escaped str, which ``open()`` accepts; ``display_path`` shows it escaped.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlite_utils

from .layout import CATALOG, CATALOG_HINT, damaged

if TYPE_CHECKING:
    from .filters import Where

IMAGES = "images"
TERMS_TABLE = "margin_terms"
IMAGE_COLUMNS = (
    "id",
    "path",
    "bytes",
    "mtime",
    "sha256",
    "width",
    "height",
    "added",
    "taken_at",
    "taken_from",
    "format",
    "signature",
)
# added in 0.3 (filters by date and type; signature: near-duplicates, indexer.decode.pixel_signature): a
# catalog from before gets them when an index run opens it; its rows keep NULL signatures until indexed anew
PHOTO_COLUMNS: dict[str, type] = {"taken_at": str, "taken_from": str, "format": str, "signature": bytes}
# columns rows_by_ids leaves out: bytes for engine.duplicates, not metadata to show or send as JSON
_INTERNAL_COLUMNS = ("signature",)
# the one spelling of a date in the catalog: ISO 8601 local time, no zone, so text order is time order
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_SQL_LOCAL_MTIME = f"strftime('{DATE_FORMAT}', mtime, 'unixepoch', 'localtime')"
# a file's extension -> the format name Pillow gives it (for rows indexed before the format was recorded)
FORMAT_OF_EXTENSION = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".webp": "webp",
    ".gif": "gif",
    ".bmp": "bmp",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".heic": "heif",
    ".heif": "heif",
    ".avif": "avif",
}
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


# -- paths ----------------------------------------------------------------------------------------
def stored_path(path: str) -> str | bytes:
    """What the ``path`` column holds for a path: the str, or the raw bytes of a name that is not UTF-8.

    A str that is not a file system name either (a lone surrogate not from ``os.fsdecode``) raises
    UnicodeEncodeError: the indexer skips that file with the reason."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def read_path(value: str | bytes) -> str:
    """The path a ``path`` column value stands for (see ``stored_path``)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _with_path(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("path"), bytes):
        row["path"] = read_path(row["path"])
    return row


# characters a terminal would act on or that change how a line reads: controls (a newline would split a
# result), line separators, bidirectional overrides, and surrogates (the bytes of a name that is not UTF-8)
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029{_BIDI}\\ud800-\\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display_path(text: str) -> str:
    """``text`` safe to print on one line: control, bidi and escape characters as ``\\n``, ``\\x1b``,
    ``\\u202e``; the undecodable bytes of a non-UTF-8 name as ``\\xff``. For people, not for open()."""

    def escape(match: re.Match) -> str:
        char = match.group()
        code = ord(char)
        if char in _NAMED:
            return _NAMED[char]
        if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's escape of the byte code - 0xDC00
            return f"\\x{code - 0xDC00:02x}"
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(escape, text)


# -- opening, and telling a damaged catalog from a full disk ---------------------------------------
def probe_catalog(index_dir: str | os.PathLike) -> int:
    """Open the catalog read-only and read its images table through (cheap: one count); returns the count.

    A missing, empty, truncated or overwritten catalog.db raises IndexDamaged with the way out."""
    path = Path(index_dir) / CATALOG
    if not path.is_file():
        raise damaged(index_dir, CATALOG, "is missing", CATALOG_HINT)
    for attempt in range(2):
        try:
            return _probe(index_dir)
        except sqlite3.DatabaseError as exc:
            if attempt == 0 and getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY_ROLLBACK":
                _roll_back(path)
                continue
            failure = sqlite_failure(exc, index_dir)
            if failure is exc:  # busy, locked: not damage
                raise
            raise failure from None
    raise AssertionError("unreachable")


def _roll_back(path: Path) -> None:
    """Put back the last committed catalog from a hot journal.

    A write that failed half-way (disk full, ulimit -f) and whose rollback failed too leaves one; only
    a read-write connection may roll it back (SQLite does so on its first read), and until then no
    read-only reader can open the catalog at all. Where even that fails, the error says why."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("select count(*) from sqlite_master").fetchall()
    finally:
        conn.close()


def _probe(index_dir: str | os.PathLike) -> int:
    db = None
    try:
        db = open_catalog(index_dir, readonly=True)
        if IMAGES not in db.table_names():
            raise damaged(index_dir, CATALOG, "has no images table (empty, or not babelsearch's)", CATALOG_HINT)
        columns = {column.name for column in db[IMAGES].columns}
        # the photo columns came later: a catalog without them is older, not damaged (see ensure_schema)
        required = set(IMAGE_COLUMNS) - set(PHOTO_COLUMNS)
        if not required <= columns:
            raise damaged(index_dir, CATALOG, f"lacks the columns {sorted(required - columns)}", CATALOG_HINT)
        row = next(db.query(f"select count(*) as n, max(id) as m from {IMAGES}"))
        return int(row["n"])
    finally:
        if db is not None:
            db.close()


def sqlite_failure(exc: sqlite3.Error, index_dir: str | os.PathLike) -> Exception:
    """The error to report for a SQLite failure on the catalog: an OSError for a full, limited, read-only
    or failing disk (what the user fixes outside), IndexDamaged for a damaged file, else ``exc`` itself."""
    import errno

    code = getattr(exc, "sqlite_errorname", "") or ""
    path = str(Path(index_dir) / CATALOG)
    if code == "SQLITE_FULL":
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    if code.startswith("SQLITE_READONLY"):
        return OSError(errno.EROFS, "the catalog cannot be written (read-only)", path)
    if code.startswith("SQLITE_IOERR") or code.startswith("SQLITE_CANTOPEN"):
        return OSError(
            errno.EIO,
            f"{exc} (a full disk, a file-size limit such as `ulimit -f`, no permission, or a failing disk)",
            path,
        )
    if code in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc) or "not a database" in str(exc):
        return damaged(index_dir, CATALOG, f"cannot be read ({exc})", CATALOG_HINT)
    return exc


def photo_date(exif_taken_at: str | None, mtime: float) -> dict[str, str]:
    """The ``taken_at`` and ``taken_from`` columns of a photo: EXIF DateTimeOriginal when the camera
    wrote one, else the file's modification time in this machine's local time."""
    if exif_taken_at:
        return {"taken_at": exif_taken_at, "taken_from": "exif"}
    return {"taken_at": time.strftime(DATE_FORMAT, time.localtime(mtime)), "taken_from": "mtime"}


def ensure_schema(db: sqlite_utils.Database) -> None:
    """Create the tables, or bring an older catalog's up to date (the writer calls it under the lock)."""
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
                **PHOTO_COLUMNS,
            },
            pk="id",
        )
        db.table(IMAGES).create_index(["path"], unique=True)
        return
    missing = {name: kind for name, kind in PHOTO_COLUMNS.items() if name not in db[IMAGES].columns_dict}
    if missing:
        _add_photo_columns(db, missing)


def _add_photo_columns(db: sqlite_utils.Database, missing: dict[str, type]) -> None:
    # Rows from before keep what can be known without reading the files again: the date from the mtime
    # (an EXIF date is read when the file is indexed anew) and the format from the extension.
    with db.conn:
        for name, kind in missing.items():
            db.table(IMAGES).add_column(name, kind)
        db.execute(f"update {IMAGES} set taken_at = {_SQL_LOCAL_MTIME}, taken_from = 'mtime' where taken_at is null")
        rows = db.execute(f"select id, path from {IMAGES} where format is null").fetchall()
        formats = [(FORMAT_OF_EXTENSION.get(os.path.splitext(read_path(p))[1].lower()), i) for i, p in rows]
        db.conn.executemany(f"update {IMAGES} set format = ? where id = ?", formats)


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
        # one plain execute: sqlite-utils' query() wraps a read in a savepoint, 3 statements per search
        cursor = db.execute(f"select * from {IMAGES} where id in ({marks})", chunk)
        names = [d[0] for d in cursor.description]
        for values in cursor:
            row = dict(zip(names, values))
            for column in _INTERNAL_COLUMNS:
                row.pop(column, None)
            found[row["id"]] = _with_path(row)
    return found


def signatures_by_ids(db: sqlite_utils.Database, ids: Iterable[int]) -> dict[int, bytes]:
    """{id: pixel signature} for the given ids that have one (indexer.decode.pixel_signature); rows
    indexed before signatures were recorded, and a catalog from before the column, have none."""
    found: dict[int, bytes] = {}
    try:
        for chunk, marks in id_chunks(i for i in ids if int(i) >= 0):
            query = f"select id, signature from {IMAGES} where id in ({marks}) and signature is not null"
            for image_id, signature in db.execute(query, chunk):
                found[int(image_id)] = bytes(signature)
    except sqlite3.OperationalError as exc:
        if "no such column" not in str(exc):  # an older catalog opened read-only (search): no signatures
            raise
        return {}
    return found


def matching_ids(db: sqlite_utils.Database, where: Where) -> np.ndarray:
    """The sorted ids (int64) of the images ``where`` allows, by one parameterised query."""
    clauses, params = _where_sql(where, set(db[IMAGES].columns_dict))
    sql = f"select id from {IMAGES}" + (f" where {' and '.join(clauses)}" if clauses else "") + " order by id"
    return np.fromiter((row[0] for row in db.execute(sql, params)), dtype=np.int64)


def _where_sql(where: Where, columns: set[str]) -> tuple[list[str], list[Any]]:
    # a catalog from before 0.3 that no index run has opened since lacks the photo columns: the same
    # answers from what it has (the date from the mtime, the format from the extension is not kept)
    taken = "taken_at" if "taken_at" in columns else _SQL_LOCAL_MTIME
    clauses: list[str] = []
    params: list[Any] = []

    def bind(value: Any) -> str:
        params.append(value)
        return f"?{len(params)}"

    def folder_test(folder: str) -> str:
        if folder.startswith("/"):
            # the folder itself or below it; substr compares exactly (LIKE would read % and _ in names)
            mark = bind(folder if folder.endswith("/") else folder + "/")
            return f"substr(path, 1, length({mark})) = {mark}"
        return f"instr('/' || path, {bind('/' + folder + '/')}) > 0"

    if where.folders:
        clauses.append("(" + " or ".join(folder_test(f) for f in where.folders) + ")")
    clauses += [f"not {folder_test(folder)}" for folder in where.exclude_folders]
    if where.after:
        clauses.append(f"{taken} >= {bind(where.after)}")
    if where.before:
        clauses.append(f"{taken} < {bind(where.before)}")
    if where.orientation:
        clauses.append(
            {"landscape": "width > height", "portrait": "height > width", "square": "width = height"}[where.orientation]
        )
    if where.min_width:
        clauses.append(f"width >= {bind(where.min_width)}")
    if where.min_height:
        clauses.append(f"height >= {bind(where.min_height)}")
    if where.types:
        # unknown formats (a catalog no index run has upgraded) match no type: an index run records them
        clauses.append(f"format in ({','.join(bind(kind) for kind in where.types)})" if "format" in columns else "0")
    return clauses, params


def count_images(db: sqlite_utils.Database, up_to: int | None = None) -> int:
    """Catalog rows; with ``up_to``, those whose id is at most that (the primary key's range)."""
    if IMAGES not in db.table_names():
        return 0
    if up_to is None:
        return db[IMAGES].count
    return next(db.query(f"select count(*) as n from {IMAGES} where id <= ?", [int(up_to)]))["n"]


def max_image_id(db: sqlite_utils.Database) -> int:
    """The highest id in the catalog, -1 when it is empty."""
    row = next(db.query(f"select max(id) as m from {IMAGES}"))
    return -1 if row["m"] is None else int(row["m"])


def image_ids(db: sqlite_utils.Database) -> np.ndarray:
    """Every id in the catalog (int64, in no particular order)."""
    return np.fromiter((row[0] for row in db.execute(f"select id from {IMAGES}")), dtype=np.int64)


def file_records(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """(id, path, bytes, mtime, sha256) of every image: what tells an unchanged file or vector."""
    return [_with_path(row) for row in db.query(f"select id, path, bytes, mtime, sha256 from {IMAGES}")]


def ids_by_path(db: sqlite_utils.Database) -> dict[str, int]:
    """{path: id} of every image."""
    return {read_path(path): image_id for image_id, path in db.execute(f"select id, path from {IMAGES}")}


# -- images: write --------------------------------------------------------------------------------
def insert_images(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> None:
    """Insert rows (dicts with any of IMAGE_COLUMNS) in one transaction."""
    values = [tuple(stored_path(row[c]) if c == "path" else row.get(c) for c in IMAGE_COLUMNS) for row in rows]
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
        # a date that came from the mtime follows it (an EXIF date is the photo's own)
        changed = [(image_id,) for _, _, image_id in stats]
        db.conn.executemany(
            f"update {IMAGES} set taken_at = {_SQL_LOCAL_MTIME} where id = ? and taken_from = 'mtime'", changed
        )


# -- margin terms ---------------------------------------------------------------------------------
def image_terms(db: sqlite_utils.Database, ids: Iterable[int]) -> dict[int, np.ndarray]:
    """{id: stored r(y) per k in MARGIN_KS} for the ids that have them."""
    found: dict[int, np.ndarray] = {}
    try:
        for chunk, marks in id_chunks(i for i in ids if int(i) >= 0):
            for image_id, blob in db.execute(f"select id, terms from {TERMS_TABLE} where id in ({marks})", chunk):
                found[image_id] = np.frombuffer(blob, dtype=np.float32)
    except sqlite3.OperationalError as exc:  # asked per search: cheaper than looking the table up first
        if "no such table" not in str(exc):
            raise
        return {}
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
