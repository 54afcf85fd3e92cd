"""``babelsearch info DIR --check``: verify that the files of an index agree with each other.

Read-only, and independent of ``SearchEngine.open`` (which refuses a damaged index): it goes on past
the first problem and lists them all. Problems make an index wrong or unusable (a file missing,
unreadable or of the wrong shape, ids that differ between a shard and its id file, catalog rows
without a vector, a damaged catalog); warnings are states an interrupted run leaves, which searches
never show and the next ``babelsearch index`` run repairs (rows of vectors a run never committed,
vectors of an interrupted removal without catalog rows, a stale ``trained.faiss``, leftover files, a
stale image count).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .catalog import IMAGES, image_ids, open_catalog, probe_catalog
from .errors import BabelsearchError
from .layout import CATALOG, SHARDS_DIR, Manifest, ShardInfo, check_readable, read_manifest
from .shards import open_store, read_shard_index

_SHARD_FILE = re.compile(r"^\d{5,}\.(faiss|ids\.npy|vectors\.npy)$")
_BLOCK = 65_536  # vectors read at once when checking that they are finite


@dataclass
class CheckReport:
    """What ``check_index`` found: problems (the index is wrong or unusable) and warnings."""

    index_dir: Path
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images: int = 0  # catalog rows
    vectors: int = 0  # vectors in the shards
    shards: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "index": str(self.index_dir),
            "ok": self.ok,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
            "images": self.images,
            "vectors": self.vectors,
            "shards": self.shards,
        }


def check_index(index_dir: str | os.PathLike) -> CheckReport:
    """Check the manifest, every shard's three files, the catalog, and that their counts and ids agree."""
    index_dir = Path(index_dir)
    report = CheckReport(index_dir)
    try:
        manifest = read_manifest(index_dir)
        check_readable(manifest, index_dir)
    except BabelsearchError as exc:
        report.problems.append(str(exc))
        return report
    report.shards = len(manifest.shards)
    vector_ids = _check_shards(index_dir, manifest, report)
    _check_trained(index_dir, manifest, report)
    _check_leftovers(index_dir, manifest, report)
    catalog_ids = _check_catalog(index_dir, report)
    if catalog_ids is not None and vector_ids is not None:
        _compare_ids(catalog_ids, vector_ids, manifest, report)
    return report


def _check_shards(index_dir: Path, manifest: Manifest, report: CheckReport) -> np.ndarray | None:
    """Each shard's files against the manifest and each other; all their ids (None if some are unreadable)."""
    parts: list[np.ndarray] = []
    complete = True
    for shard in manifest.shards:
        ids = _check_shard(index_dir, manifest, shard, report)
        if ids is None:
            complete = False
        else:
            parts.append(ids)
    all_ids = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    report.vectors = int(len(all_ids))
    unique, counts = np.unique(all_ids, return_counts=True)
    if (counts > 1).any():
        twice = unique[counts > 1]
        report.problems.append(f"{len(twice)} ids are in more than one shard (e.g. {twice[:5].tolist()})")
    total = sum(shard.count for shard in manifest.shards)
    if complete and total != len(all_ids):
        report.problems.append(f"the manifest's shard counts add up to {total}, the shards hold {len(all_ids)}")
    return all_ids if complete else None


def _check_shard(index_dir: Path, manifest: Manifest, shard: ShardInfo, report: CheckReport) -> np.ndarray | None:
    missing = [name for name in (shard.file, shard.ids, shard.vectors) if not name or not (index_dir / name).is_file()]
    if missing:
        report.problems.append(f"{', '.join(str(m) for m in missing)} {'is' if len(missing) == 1 else 'are'} missing")
        return None
    try:
        store = open_store(index_dir, manifest, shard)
    except (BabelsearchError, OSError) as exc:
        report.problems.append(_short(exc))
        return None
    ids = np.asarray(store.ids)
    if len(ids) > 1 and not (np.diff(ids) > 0).all():
        report.problems.append(f"{shard.ids} is not sorted, or holds an id twice")
    if len(ids) and ids[0] < 0:
        report.problems.append(f"{shard.ids} holds negative ids")
    for start in range(0, len(store), _BLOCK):
        if not np.isfinite(store.rows(np.arange(start, min(start + _BLOCK, len(store))))).all():
            report.problems.append(f"{shard.vectors} holds vectors that are not finite (NaN or infinity)")
            break
    try:
        index = read_shard_index(index_dir, manifest, shard, mmap=True)
    except (BabelsearchError, OSError) as exc:
        report.problems.append(_short(exc))
        return ids
    held = faiss_ids(index)
    if held is not None and not np.array_equal(np.sort(held), ids):
        report.problems.append(f"{shard.file} holds other ids than {shard.ids}")
    return ids


def faiss_ids(index: Any) -> np.ndarray | None:
    """The ids a faiss shard holds (IDMap or IVF), int64; None for a kind this does not know."""
    import faiss

    index = faiss.downcast_index(index)
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    lists = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = lists.list_size(list_no)
        if size:
            pointer = lists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(pointer, size).astype(np.int64))
            lists.release_ids(list_no, pointer)
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _check_trained(index_dir: Path, manifest: Manifest, report: CheckReport) -> None:
    if manifest.trained is None:
        return
    path = index_dir / manifest.trained
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        digest = None
    if digest != manifest.trained_sha256:
        # searches never read it; a writer rebuilds it from a shard (every shard holds the same quantizer)
        report.warnings.append(
            f"{manifest.trained} is {'missing' if digest is None else 'not the one the manifest records'}; "
            "searches do not need it, and the next `babelsearch index` run rebuilds it"
        )


def _check_leftovers(index_dir: Path, manifest: Manifest, report: CheckReport) -> None:
    referenced = {name for s in manifest.shards for name in (s.file, s.ids, s.vectors) if name}
    try:
        names = sorted(p.name for p in (index_dir / SHARDS_DIR).iterdir())
    except OSError:
        names = []
    stray = [n for n in names if _SHARD_FILE.match(n) and f"{SHARDS_DIR}/{n}" not in referenced]
    stray += sorted(p.name for p in index_dir.glob(".*.tmp")) + [n for n in names if n.endswith(".tmp")]
    if stray:
        report.warnings.append(
            f"{len(stray)} files no manifest names (left by an interrupted run, e.g. {stray[0]}); "
            "the next `babelsearch index` run deletes them"
        )


def _check_catalog(index_dir: Path, report: CheckReport) -> np.ndarray | None:
    """The catalog's ids, after SQLite's own integrity check; None (and a problem) if it is damaged."""
    try:
        report.images = probe_catalog(index_dir)
        db = open_catalog(index_dir, readonly=True)
        try:
            verdict = [row[0] for row in db.execute("pragma integrity_check(20)")]
            if verdict != ["ok"]:
                report.problems.append(f"{CATALOG} fails SQLite's integrity check: {'; '.join(verdict[:3])}")
                return None
            ids = image_ids(db)
            nulls = next(db.query(f"select count(*) as n from {IMAGES} where path is null"))["n"]
            if nulls:
                report.problems.append(f"{CATALOG} has {nulls} rows without a path")
        finally:
            db.close()
    except BabelsearchError as exc:
        report.problems.append(_short(exc))
        return None
    except sqlite3.Error as exc:
        report.problems.append(f"{CATALOG} cannot be read ({exc})")
        return None
    return ids


def _compare_ids(catalog_ids: np.ndarray, vector_ids: np.ndarray, manifest: Manifest, report: CheckReport) -> None:
    without_vector = np.setdiff1d(catalog_ids, vector_ids)
    # a run writes an image's row before the manifest commits its vector (indexer/writer.py): rows of
    # a run interrupted between the two have ids above every committed one; other rows without a vector
    # were lost with their shard
    pending = without_vector[without_vector > (vector_ids.max() if len(vector_ids) else -1)]
    lost = without_vector[: len(without_vector) - len(pending)]
    if len(lost):
        report.problems.append(
            f"{len(lost)} catalog rows have no vector in any shard (e.g. ids {lost[:5].tolist()}); "
            "they can never be found"
        )
    if len(pending):
        report.warnings.append(
            f"{len(pending)} catalog rows are of vectors an interrupted run never committed (ids from "
            f"{int(pending[0])}); searches never show them and the next `babelsearch index` run embeds "
            "their images again"
        )
    without_row = np.setdiff1d(vector_ids, catalog_ids)
    if len(without_row):
        report.warnings.append(
            f"{len(without_row)} vectors have no catalog row (an interrupted run); searches never show them "
            "and the next `babelsearch index` run drops them"
        )
    if manifest.images != len(catalog_ids):
        report.warnings.append(
            f"the manifest counts {manifest.images} images, the catalog holds {len(catalog_ids)} "
            "(an interrupted run; the next `babelsearch index` run updates it)"
        )


def _short(exc: BaseException) -> str:
    """A damaged-file message without the index prefix and the way out, which the report gives once."""
    text = str(exc)
    _, marker, rest = text.partition(" is damaged: ")
    return rest.split("; run `babelsearch index", 1)[0] if marker else text
