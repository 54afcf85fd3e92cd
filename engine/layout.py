"""The on-disk contract of an index directory.

    DIR/manifest.json   the commit point, written atomically: format version, model, dim, metric,
                        factory, shard list with counts, refine dtype, default search parameters
    DIR/catalog.db      SQLite (sqlite-utils): one row per image; row id == FAISS id
    DIR/trained.faiss   the trained, empty index every shard is filled from (IVF factories only)
    DIR/shards/NNNNN.faiss        at most ``shard_size`` vectors with their catalog ids
    DIR/shards/NNNNN.ids.npy      the shard's ids, sorted (int64)
    DIR/shards/NNNNN.vectors.npy  the same rows' vectors for exact refine (float16 for IVF, float32
                                  for Flat), memory-mapped by readers

Shard files are immutable: a shard that changes (filled further, rows removed, retrained) is written
under a fresh number, the manifest is switched to it, and only then is the old file deleted. Files
that no manifest references are leftovers of an interrupted run and are removed by the next one.

A directory without a manifest is not an index; a manifest from a newer format or another model is
refused with a message that says what to do. Every file a manifest names lies inside the index directory
(a relative path without ``..``): a manifest that names ``/etc/passwd`` or ``../x`` is damaged, never read.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import IncompatibleIndex, IndexDamaged, IndexNotFound

if TYPE_CHECKING:
    from .encoders.base import Encoder

FORMAT_NAME = "babelsearch-index"
FORMAT_VERSION = 2
# format 1: one exact IndexIDMap2(Flat) shard, no refine vectors; `babelsearch index` upgrades it.
OLDEST_READABLE = 2
# an index of vectors computed elsewhere (``index --embeddings``) without a model to encode queries
PRECOMPUTED_MODEL = "precomputed"
MANIFEST = "manifest.json"
CATALOG = "catalog.db"
TRAINED = "trained.faiss"
SHARDS_DIR = "shards"


@dataclass
class ShardInfo:
    file: str  # the faiss index, relative to the index directory
    count: int
    ids: str | None = None  # sorted int64 ids (format 2+)
    vectors: str | None = None  # refine vectors in the manifest's refine_dtype, same row order as ids


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
    # format 2
    trained: str | None = None  # file of the trained empty index shards are filled from
    trained_sha256: str | None = None  # detects a trained.faiss from an interrupted retrain
    trained_for: int = 0  # collection size the factory was chosen and trained for
    refine_dtype: str = "float32"
    shard_size: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": FORMAT_NAME, **data}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: Path) -> Manifest:
        if data.get("format") != FORMAT_NAME:
            raise IncompatibleIndex(f"{where} is not a babelsearch manifest")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise IncompatibleIndex(
                f"{where} has index format {version!r}; this babelsearch reads up to "
                f"{FORMAT_VERSION}: upgrade babelsearch or rebuild the index"
            )
        try:
            shards = [_checked_shard(ShardInfo(**s), where) for s in data.get("shards", [])]
            trained = data.get("trained")
            if trained is not None:
                inside_index(trained, where)
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
                trained=None if trained is None else str(trained),
                trained_sha256=data.get("trained_sha256"),
                trained_for=int(data.get("trained_for", 0)),
                refine_dtype=str(data.get("refine_dtype", "float32")),
                shard_size=int(data.get("shard_size", 0)),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: 1e999, 10**400
            raise IndexDamaged(f"{where} is damaged ({exc!r}); rebuild the index") from exc


def _checked_shard(shard: ShardInfo, where: Path) -> ShardInfo:
    inside_index(shard.file, where)
    for name in (shard.ids, shard.vectors):  # None in format 1
        if name is not None:
            inside_index(name, where)
    if isinstance(shard.count, bool) or not isinstance(shard.count, int) or shard.count < 0:
        raise IndexDamaged(f"{where} is damaged (shard {shard.file!r} has count {shard.count!r}); rebuild the index")
    return shard


# a backslash or a drive colon would leave the directory on Windows; NUL ends a C string early
_ESCAPING = re.compile(r"[\\:\x00]")


def expand_home(name: str | os.PathLike) -> Path:
    """``~`` and ``~user`` expanded; the name as it is when that cannot be done (no such user, no home
    directory, a NUL byte), so that the run reports it as a file that does not exist."""
    try:
        return Path(name).expanduser()
    except (RuntimeError, ValueError, KeyError):
        return Path(name)


def inside_index(name: object, where: Path) -> str:
    """``name`` if it is a relative path that stays inside the index directory, else IndexDamaged.

    Lexical, so a shards/ folder that is a link to another disk still works; what is refused is a
    manifest (edited, damaged or hostile) that would make a reader open a file elsewhere."""
    if (
        not isinstance(name, str)
        or not name.strip("/")
        or name.startswith("/")
        or any(part == ".." or _ESCAPING.search(part) for part in PurePosixPath(name).parts)
    ):
        raise IndexDamaged(
            f"{where} is damaged: it names the file {name!r}, which is not inside the index directory "
            "(paths there are relative, without '..'); rebuild the index, or restore the manifest from a backup"
        )
    return name


REPAIR_HINT = (
    "run `babelsearch index SOURCES --index {index_dir} --repair` (the folders or --embeddings it was built from) "
    "to drop what it held and embed those images again, or `babelsearch info {index_dir} --check` to list every problem"
)


CATALOG_HINT = (
    "run `babelsearch index SOURCES --index {index_dir} --repair` (the folders or --embeddings it was built from) "
    "to set it aside, start a new one and embed every image again"
)


def damaged(index_dir: str | os.PathLike, name: str, problem: str, way_out: str = REPAIR_HINT) -> IndexDamaged:
    """The one shape of a "damaged" error: the index, the file (relative to it), what is wrong, the way out."""
    return IndexDamaged(f"index {index_dir} is damaged: {name} {problem}; " + way_out.format(index_dir=index_dir))


def manifest_path(index_dir: Path) -> Path:
    return Path(index_dir) / MANIFEST


def read_manifest(index_dir: str | os.PathLike) -> Manifest:
    path = manifest_path(Path(index_dir))
    if not path.is_file():
        if not Path(index_dir).exists():
            raise IndexNotFound(f"no index at {index_dir}: the directory does not exist")
        raise IndexNotFound(f"no index at {index_dir}: {MANIFEST} is missing (build one with `babelsearch index`)")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise IndexDamaged(f"{path} is damaged: it cannot be read ({exc}); rebuild the index") from exc
    if not isinstance(data, dict):
        raise IndexDamaged(f"{path} is damaged (not a babelsearch manifest); rebuild the index")
    return Manifest.from_json(data, path)


def check_readable(manifest: Manifest, index_dir: str | os.PathLike) -> None:
    """Refuse, with the way out, an index whose format this version can only upgrade, not search."""
    if manifest.format_version < OLDEST_READABLE:
        raise IncompatibleIndex(
            f"index {index_dir} has format {manifest.format_version}, which predates sharded IVF-PQ "
            f"indexes; run `babelsearch index SOURCE --index {index_dir}` once to upgrade it in place "
            f"(nothing is re-embedded)"
        )


def write_manifest(index_dir: str | os.PathLike, manifest: Manifest) -> None:
    manifest.updated = time.time()
    text = json.dumps(manifest.to_json(), indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(manifest_path(Path(index_dir)), text.encode("utf-8"))


MODEL_VERSION = "model_version"  # manifest.settings key: the encoder's ``version``, where it has one


def check_model_version(manifest: Manifest, encoder: Encoder, index_dir: str | os.PathLike) -> None:
    """Refuse an encoder whose vectors differ from the index's: same model name, another recipe."""
    have, recorded = encoder.version, manifest.settings.get(MODEL_VERSION)
    if have is not None and recorded is not None and str(have) != str(recorded):
        raise IncompatibleIndex(
            f"index {index_dir} holds {manifest.model} vectors of version {recorded}, but this "
            f"babelsearch's {manifest.model} makes version {have}, which do not match them; "
            "build a new index (another --index directory) from the same photos"
        )


def check_model(manifest: Manifest, model: str | None, index_dir: str | os.PathLike) -> None:
    """Refuse to mix models: vectors of two models in one index are meaningless together."""
    if model is not None and model != manifest.model:
        raise IncompatibleIndex(
            f"index {index_dir} was built with model {manifest.model!r}, not {model!r}; "
            f"use --model {manifest.model} or build a new index in another directory"
        )


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write to a temp file in the same directory, fsync, rename: readers see old or new, never half.

    ``durable=False`` skips both fsyncs, for caches whose files can be made again: readers still never
    see half a file, but after a power loss the file may be missing, empty or cut short."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), durable=durable)


def atomic_write(path: Path, write: Callable[[Path], object], *, durable: bool = True) -> None:
    """Like atomic_write_bytes, for writers that want a path (np.save, faiss.write_index)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
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
