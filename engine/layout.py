"""The on-disk contract of an index directory.

    DIR/manifest.json   written last, atomically: format version, model, dim, metric, layout, counts
    DIR/catalog.db      SQLite (sqlite-utils): one row per image; row id == FAISS id
    DIR/trained.faiss   trained (empty) IVF index, for layouts that need training
    DIR/shards/NNNNN.faiss   vectors with ids, searched together and merged

A directory without a manifest is not an index; a manifest from a newer format or another model is
refused with a message that says what to do.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import IncompatibleIndex, IndexNotFound

FORMAT_NAME = "babelsearch-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CATALOG = "catalog.db"
TRAINED = "trained.faiss"
SHARDS_DIR = "shards"


@dataclass
class ShardInfo:
    file: str  # relative to the index directory
    count: int


@dataclass
class Manifest:
    model: str
    dim: int
    metric: str = "inner_product"
    factory: str = "Flat"
    shards: list[ShardInfo] = field(default_factory=list)
    images: int = 0
    format_version: int = FORMAT_VERSION
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": FORMAT_NAME, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> "Manifest":
        if data.get("format") != FORMAT_NAME:
            raise IncompatibleIndex(f"{where} is not a babelsearch manifest")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IncompatibleIndex(
                f"{where} has index format {version!r}; this babelsearch reads up to "
                f"{FORMAT_VERSION}: upgrade babelsearch or rebuild the index"
            )
        try:
            shards = [ShardInfo(**s) for s in data.get("shards", [])]
            return cls(
                model=str(data["model"]),
                dim=int(data["dim"]),
                metric=str(data.get("metric", "inner_product")),
                factory=str(data.get("factory", "Flat")),
                shards=shards,
                images=int(data.get("images", 0)),
                format_version=version,
                created=float(data.get("created", 0.0)),
                updated=float(data.get("updated", 0.0)),
                settings=dict(data.get("settings", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleIndex(f"{where} is damaged ({exc!r}); rebuild the index") from exc


def manifest_path(index_dir: Path) -> Path:
    return Path(index_dir) / MANIFEST


def read_manifest(index_dir: str | os.PathLike) -> Manifest:
    path = manifest_path(Path(index_dir))
    if not path.is_file():
        if not Path(index_dir).exists():
            raise IndexNotFound(f"no index at {index_dir}: the directory does not exist")
        raise IndexNotFound(
            f"no index at {index_dir}: {MANIFEST} is missing (build one with `babelsearch index`)"
        )
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise IncompatibleIndex(f"{path} cannot be read ({exc}); rebuild the index") from exc
    if not isinstance(data, dict):
        raise IncompatibleIndex(f"{path} is not a babelsearch manifest")
    return Manifest.from_json(data, path)


def write_manifest(index_dir: str | os.PathLike, manifest: Manifest) -> None:
    manifest.updated = time.time()
    text = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(manifest_path(Path(index_dir)), text.encode("utf-8"))


def check_model(manifest: Manifest, model: str | None, index_dir: str | os.PathLike) -> None:
    """Refuse to mix models: vectors of two models in one index are meaningless together."""
    if model is not None and model != manifest.model:
        raise IncompatibleIndex(
            f"index {index_dir} was built with model {manifest.model!r}, not {model!r}; "
            f"use --model {manifest.model} or build a new index in another directory"
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
