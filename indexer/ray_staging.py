"""The worker side of a Ray build: decode + embed one part of the input, staged as an .npz file.

See indexer/distributed.py for the whole recipe; the staged parts are named by the input slice they hold,
so a task Ray retries overwrites its own file and a killed driver finds them again.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from babelsearch.engine.encoders import Encoder
from babelsearch.engine.errors import BabelsearchError
from babelsearch.engine.images import MAX_FILE_BYTES

from .decode import Decoded, Failed
from .pipeline import decode_all

logger = logging.getLogger(__name__)


class DistributedBuildError(BabelsearchError):
    """Ray could not be reached, or a Ray worker failed; what was committed before stays indexed."""


# tests only: a folder; the first actor that can rename DIR/arm to DIR/fired, right after it wrote
# a part, kills its own process (SIGKILL), so Ray restarts it and retries that task
DEBUG_CRASH_ENV = "BABELSEARCH_DEBUG_RAY_CRASH"


DECODE_THREADS = 2  # per CPU actor: decoding overlaps the model call


def one_line(exc: BaseException) -> str:
    """An error's last non-empty line: Ray wraps a worker's exception in its traceback, whose last line
    says what failed (the driver's errors stay one line)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


# -- the worker side ------------------------------------------------------------------------------
class EmbedPart:
    """Ray Data callable class: decode and embed one part, write it to the staging folder.

    Constructed once per actor (the encoder loads once); ``__call__`` gets rows that are each a
    part (``seq``: the inputs' positions in the driver's list, ``path``: their paths) and returns a
    summary row per part. Images are encoded in the local build's groups (the inputs that share
    ``seq // batch_size``), so a fresh Ray build makes the same model calls as a local one.
    """

    def __init__(
        self,
        make_encoder: Callable[[], Encoder],
        folder: str,
        model_key: dict[str, str],
        batch_size: int,
        decode_threads: int,
        max_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        import ray

        self.encoder = make_encoder()
        self.folder = Path(folder)
        self.model_key = model_key
        self.batch_size = max(batch_size, int(self.encoder.image_batch_size or 0))
        self.decode_threads = decode_threads
        self.max_bytes = max_bytes
        self.short_side = self.encoder.preprocess_short_side
        self.name = f"{ray.util.get_node_ip_address()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        summaries = [self.embed_part(seqs, paths) for seqs, paths in zip(batch["seq"], batch["path"])]
        return {key: [s[key] for s in summaries] for key in ("part", "inputs", "images", "seconds", "worker")}

    def embed_part(self, seqs: Any, raw_paths: Any) -> dict[str, Any]:
        started = time.perf_counter()
        seqs = np.asarray(seqs, dtype=np.int64)
        paths = [Path(os.fsdecode(bytes(p))) for p in raw_paths]
        decoded = decode_all(
            paths, self.short_side, self.decode_threads, lookahead=2 * self.batch_size, max_bytes=self.max_bytes
        )
        results = list(decoded)
        vectors: list[np.ndarray] = []
        groups = seqs // self.batch_size
        for group in np.unique(groups):
            images = [r.image for r, g in zip(results, groups) if g == group and isinstance(r, Decoded)]
            if images:
                vectors.append(np.asarray(self.encoder.encode_images(images), dtype=np.float32))
        dim = int(self.model_key["dim"])
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
        name = f"part-{int(seqs[0]):09d}.npz"
        write_part(self.folder / name, seqs, results, matrix, self.model_key)
        _debug_crash_once()
        good = sum(isinstance(r, Decoded) for r in results)
        return {
            "part": str(self.folder / name),
            "inputs": len(results),
            "images": good,
            "seconds": time.perf_counter() - started,
            "worker": self.name,
        }


def _debug_crash_once() -> None:
    folder = os.environ.get(DEBUG_CRASH_ENV)
    if not folder:
        return
    try:
        os.rename(Path(folder) / "arm", Path(folder) / "fired")  # atomic: exactly one actor wins
    except OSError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


# -- staged parts ---------------------------------------------------------------------------------
def write_part(
    path: Path, seqs: np.ndarray, results: list[Decoded | Failed], vectors: np.ndarray, model_key: dict[str, str]
) -> None:
    """One part's results as .npz, atomically (a temp file renamed: a killed worker leaves no half part)."""
    ok = np.array([isinstance(r, Decoded) for r in results], dtype=bool)

    def field(name: str, default: Any) -> list:
        return [getattr(r, name) if isinstance(r, Decoded) else default for r in results]

    arrays: dict[str, Any] = {
        "seq": seqs,
        "path": np.array([os.fsencode(r.path) for r in results], dtype=bytes),
        "ok": ok,
        "reason": np.array([r.reason if isinstance(r, Failed) else "" for r in results], dtype=str),
        "bytes": np.array(field("bytes", -1), dtype=np.int64),
        "mtime": np.array(field("mtime", 0.0), dtype=np.float64),
        "sha256": np.array(field("sha256", ""), dtype=str),
        "width": np.array(field("width", 0), dtype=np.int64),
        "height": np.array(field("height", 0), dtype=np.int64),
        # "" for unknown: npz keeps no None (and never pickles)
        "format": np.array([f or "" for f in field("format", "")], dtype=str),
        "exif_taken_at": np.array([t or "" for t in field("exif_taken_at", "")], dtype=str),
        # one row of SIGNATURE_BYTES per input and a mask (a bytes array would drop trailing zero bytes)
        "signature": _signature_matrix(field("signature", None)),
        "has_signature": np.array([s is not None for s in field("signature", None)], dtype=bool),
        "vectors": np.ascontiguousarray(vectors, dtype=np.float32),
        **{f"key_{k}": np.array(v) for k, v in model_key.items()},
    }
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a file object: np.savez(path) would add ".npz" to the temp name
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _signature_matrix(signatures: list[bytes | None]) -> np.ndarray:
    width = max((len(s) for s in signatures if s is not None), default=0)
    matrix = np.zeros((len(signatures), width), dtype=np.uint8)
    for row, signature in enumerate(signatures):
        if signature is not None:
            matrix[row, : len(signature)] = np.frombuffer(signature, dtype=np.uint8)
    return matrix


class Part:
    """A staged part, read back on the driver (vectors loaded on first use, dropped when consumed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with np.load(path, allow_pickle=False) as data:
            self.key = {k[4:]: str(data[k]) for k in data.files if k.startswith("key_")}
            self.paths = [Path(os.fsdecode(p)) for p in data["path"].tolist()]
            self.ok = data["ok"]
            self.reason = data["reason"]
            self.bytes = data["bytes"]
            self.mtime = data["mtime"]
            self.sha256 = data["sha256"]
            self.width = data["width"]
            self.height = data["height"]
            # parts staged by an older version lack them: unknown
            self.format = data["format"] if "format" in data.files else None
            self.exif_taken_at = data["exif_taken_at"] if "exif_taken_at" in data.files else None
            has = "signature" in data.files and "has_signature" in data.files
            self.signature = data["signature"] if has else None
            self.has_signature = data["has_signature"] if has else None
        self.vector_row = np.cumsum(self.ok) - 1  # row i's vector, where ok[i]
        self._vectors: np.ndarray | None = None
        self.wanted = 0  # rows the driver will still take from this part

    @property
    def vectors(self) -> np.ndarray:
        if self._vectors is None:
            with np.load(self.path, allow_pickle=False) as data:
                self._vectors = data["vectors"]
        return self._vectors

    def item(self, row: int) -> tuple[Decoded | Failed, np.ndarray | None]:
        path = self.paths[row]
        if not self.ok[row]:
            return Failed(path, str(self.reason[row])), None
        decoded = Decoded(
            path=path,
            image=None,
            bytes=int(self.bytes[row]),
            mtime=float(self.mtime[row]),
            sha256=str(self.sha256[row]),
            width=int(self.width[row]),
            height=int(self.height[row]),
            format=str(self.format[row]) or None if self.format is not None else None,
            exif_taken_at=str(self.exif_taken_at[row]) or None if self.exif_taken_at is not None else None,
            signature=self._signature(row),
        )
        return decoded, self.vectors[int(self.vector_row[row])]

    def _signature(self, row: int) -> bytes | None:
        if self.signature is None or self.has_signature is None or not self.has_signature[row]:
            return None  # a part staged by an older version, or an image without one
        return self.signature[row].tobytes()


def find_staged(staging: Path, todo: list[Path], model_key: dict[str, str]) -> dict[Path, Slot]:
    """Inputs of ``todo`` that an earlier, interrupted run embedded and staged, with the same model,
    whose files still have the size and mtime they had then (a failed decode is tried again)."""
    if not staging.is_dir():
        return {}
    wanted = set(todo)
    found: dict[Path, Slot] = {}
    for file in sorted(staging.glob("run-*/part-*.npz")):
        try:
            part = Part(file)
        except (OSError, ValueError, KeyError, EOFError) as exc:  # damaged: its images are embedded again
            logger.info(f"ignoring {file}: {one_line(exc)}")
            continue
        if part.key != model_key:
            continue
        for row, path in enumerate(part.paths):
            if path in found or path not in wanted or not part.ok[row]:
                continue
            try:
                stat = os.stat(path)
            except OSError:
                continue
            if stat.st_size == part.bytes[row] and stat.st_mtime == part.mtime[row]:
                found[path] = Slot(file, row)
    return found


@dataclass
class Slot:
    """Where one input's staged result is: a part file and a row in it."""

    part: Path
    row: int
