"""The index lock, the writers' file helpers, and the crash/pause hooks the durability tests use.

Every writer of an index directory (``index``, ``index --embeddings``, ``bank update``) holds
``DIR/.lock`` (an fcntl flock) for its whole read-modify-write of the manifest: a manifest read
without it may be stale by the time it is written back, and writing a stale shard list back
destroys the index (the files it names were deleted by the run that replaced them).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from babelsearch.engine.errors import IndexBusy
from babelsearch.engine.layout import SHARDS_DIR, ShardInfo, atomic_write

logger = logging.getLogger(__name__)

LOCK = ".lock"
# tests only: "POINT:N" kills this process with SIGKILL the N-th time it reaches POINT
DEBUG_KILL_ENV = "BABELSEARCH_DEBUG_KILL"
# tests only: "POINT:DIR" makes this process, at POINT, create DIR/POINT.paused and wait for DIR/POINT.go
DEBUG_PAUSE_ENV = "BABELSEARCH_DEBUG_PAUSE"
DEBUG_PAUSE_DEADLINE = 120.0  # seconds a paused process waits for its go file before it gives up


# -- the index lock -------------------------------------------------------------------------------
# How long a writer waits for another to finish before it refuses (IndexBusy), as SQLite's busy timeout
# does: a `bank update` started during an `index` run, or two runs started by cron, then follow each
# other instead of one failing at once. Announced when the wait starts; `--wait 0` refuses at once.
DEFAULT_LOCK_WAIT = 300.0


def acquire_lock(index_dir: Path, holder: str, wait: float = 0.0):
    """Take ``DIR/.lock``; ``holder`` (e.g. "babelsearch index") is recorded in the file so that another
    run can say who holds it. Held by another run: wait up to ``wait`` seconds for it, saying so in a
    log line (the CLI prints it), then raise IndexBusy naming that run."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one run at a time is then up to the user
        return None
    fd = os.open(index_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_within(fd, index_dir, wait, fcntl)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{holder}\n{os.getpid()}\n".encode(), 0)
    return fd


def _lock_within(fd: int, index_dir: Path, wait: float, fcntl) -> None:
    deadline = time.monotonic() + max(0.0, wait)
    pause = 0.05
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        other = _holder(fd)
        left = deadline - time.monotonic()
        if left <= 0:
            waited = f" after waiting {_seconds(wait)}" if wait > 0 else ""
            raise IndexBusy(
                f"another {other} is writing {index_dir}{waited}; try again when it has finished"
                + (", or wait longer with --wait SECONDS" if wait > 0 else " (--wait SECONDS waits for it)")
            )
        if not announced:
            logger.warning(
                "another %s is writing %s; waiting up to %s for it to finish", other, index_dir, _seconds(wait)
            )
            announced = True
        time.sleep(min(pause, left))
        pause = min(pause * 2, 1.0)


def _seconds(seconds: float) -> str:
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


def release_lock(fd) -> None:
    if fd is not None:
        os.close(fd)  # closing releases the flock


@contextmanager
def index_lock(index_dir: Path, holder: str, wait: float = 0.0) -> Iterator[None]:
    fd = acquire_lock(index_dir, holder, wait)
    try:
        yield
    finally:
        release_lock(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file records it: "`babelsearch index` run (pid 4242)"."""
    try:
        name, _, rest = os.pread(fd, 200, 0).decode("utf-8", "replace").partition("\n")
    except OSError:
        name, rest = "", ""
    pid = rest.partition("\n")[0].strip()
    # a lock file from before holders were recorded names no one
    return f"`{name.strip() or 'babelsearch index'}` run" + (f" (pid {pid})" if pid.isdigit() else "")


# -- files ----------------------------------------------------------------------------------------
def serialize(index) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


# faiss reports a failed write as RuntimeError("... write error in FILE: 12 != 4096 (No space left on device)")
_FAISS_WRITE_ERROR = re.compile(r"write error in (?P<file>.*?): \d+ != \d+ \((?P<reason>[^()]*)\)")
_ERRNO_BY_MESSAGE = {
    os.strerror(code): code
    for code in (
        getattr(errno, name, None) for name in ("ENOSPC", "EFBIG", "EROFS", "EACCES", "EPERM", "EDQUOT", "EIO")
    )
    if code is not None
}


def write_faiss(index, path: Path) -> None:
    """The faiss index at ``path``, atomically. A failed write (disk full, ``ulimit -f``, read-only)
    raises OSError with its errno, as Python's own writes do, not faiss' RuntimeError."""
    import faiss

    def write(tmp: Path) -> None:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:
            found = _FAISS_WRITE_ERROR.search(str(exc))
            if found is None:
                raise
            reason = found.group("reason")
            raise OSError(_ERRNO_BY_MESSAGE.get(reason, errno.EIO), reason, str(path)) from None

    atomic_write(path, write)


class _PythonWrites:
    """A file that numpy writes through ``write`` calls (in chunks): a failed write then raises OSError
    with its errno (ENOSPC, EFBIG), where numpy's own fwrite says only "N requested and M written"."""

    def __init__(self, fh) -> None:
        self._fh = fh

    def write(self, data) -> int:
        return self._fh.write(data)


def save_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as a .npy file at ``path``, atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.save(path) would append ".npy" to the name
            np.lib.format.write_array(_PythonWrites(fh), np.asanyarray(array), allow_pickle=False)

    atomic_write(path, write)


def write_shard_files(
    index_dir: Path, number: int, index, ids: np.ndarray, vectors: np.ndarray, dtype, reuse: ShardInfo | None = None
) -> ShardInfo:
    """One shard's files under ``number``, each atomic: the faiss index, and the refine files (ids
    sorted, vectors in ``dtype`` in the same order), or ``reuse``'s, which hold the same rows."""
    base = f"{SHARDS_DIR}/{number:05d}"
    write_faiss(index, index_dir / f"{base}.faiss")
    if reuse is not None:
        ids_file, vectors_file = reuse.ids, reuse.vectors
    else:
        order = np.argsort(ids, kind="stable")
        ids_file, vectors_file = f"{base}.ids.npy", f"{base}.vectors.npy"
        save_npy(index_dir / ids_file, np.ascontiguousarray(ids[order], dtype=np.int64))
        save_npy(index_dir / vectors_file, np.ascontiguousarray(vectors[order], dtype=dtype))
    debug_point("shard-written")
    return ShardInfo(file=f"{base}.faiss", count=int(index.ntotal), ids=ids_file, vectors=vectors_file)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- test hooks -----------------------------------------------------------------------------------
_debug_hits: dict[str, int] = {}


def debug_point(name: str) -> None:
    """Durability tests: ``BABELSEARCH_DEBUG_KILL=POINT:N`` kills the process (SIGKILL) at the N-th
    POINT; ``BABELSEARCH_DEBUG_PAUSE=POINT:DIR`` holds it at POINT until the test says go."""
    kill = os.environ.get(DEBUG_KILL_ENV)
    if kill:
        point, _, nth = kill.partition(":")
        if point == name:
            _debug_hits[name] = _debug_hits.get(name, 0) + 1
            if _debug_hits[name] >= int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get(DEBUG_PAUSE_ENV)
    if pause:
        point, _, folder = pause.partition(":")
        if point == name:
            _wait_for_go(Path(folder), name)


def _wait_for_go(folder: Path, name: str) -> None:
    """A handshake, not a sleep: the test sees the marker, does its part, then creates the go file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.paused").write_text(str(os.getpid()))
    deadline = time.monotonic() + DEBUG_PAUSE_DEADLINE
    while not (folder / f"{name}.go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"paused at {name} for {DEBUG_PAUSE_DEADLINE:.0f} s and no {folder / name}.go came")
        time.sleep(0.02)
