"""Opening an indexed image for the file and thumbnail routes: only the file that was indexed, or an error.

The catalog row says where the file was and what it was (size and mtime, as the indexer recorded them,
after resolving every symlink in the path). By the time it is asked for, that path may name something
else: a symlink to /etc/passwd, a FIFO, a directory, another file. So the last component is opened
without following a symlink (O_NOFOLLOW) and without blocking (O_NONBLOCK: opening a FIFO would
otherwise wait for a writer, and hang the request), and what was opened is checked through its own
descriptor (fstat): a regular file with the recorded size and mtime. Then it is read from that same
descriptor, so nothing can be swapped between the check and the read.

Size and mtime are what the indexer itself compares to tell a changed file; hashing the whole file
(sha256) on every view would cost a full read for the same answer in practice. A directory higher up
replaced by a symlink is not refused by O_NOFOLLOW, but the file it leads to would also need the same
name, size and mtime to the nanosecond.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, BinaryIO

from .errors import WebError

_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_FLAGS |= getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


def open_indexed_file(row: dict[str, Any]) -> tuple[BinaryIO, os.stat_result]:
    """The catalog row's file, opened for reading, and its stat; else a WebError: 404 "file_missing"
    when nothing can be opened there, 410 "file_changed" when what is there is not the indexed file."""
    image_id, path = row["id"], row["path"]
    if not hasattr(os, "O_NOFOLLOW") and os.path.islink(path):  # Windows: checked before, not at, the open
        raise _changed(image_id, "is now a symbolic link")
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # what O_NOFOLLOW answers for a symlink
            raise _changed(image_id, "is now a symbolic link") from None
        reason = "is gone" if exc.errno in (errno.ENOENT, errno.ENOTDIR) else f"cannot be opened ({exc.strerror})"
        raise WebError(404, "file_missing", f"image {image_id} is indexed, but its file {reason}: {path}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _changed(image_id, "is no longer a regular file")
        # rows of precomputed vectors (a --metadata path column) record neither: nothing to compare
        if row.get("bytes") is not None and int(row["bytes"]) != st.st_size:
            raise _changed(image_id, "has another size than when it was indexed")
        if row.get("mtime") is not None and float(row["mtime"]) != st.st_mtime:
            raise _changed(image_id, "was modified after it was indexed")
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def _changed(image_id: int, what: str) -> WebError:
    return WebError(
        410,
        "file_changed",
        f"image {image_id}'s file {what}; it is not served until `babelsearch index` has seen it again",
    )


def file_problem(row: dict[str, Any]) -> str | None:
    """Why the row's file cannot be served ("file_missing", "file_changed"), or None when it can."""
    try:
        file, _ = open_indexed_file(row)
    except WebError as exc:
        return exc.code
    file.close()
    return None
