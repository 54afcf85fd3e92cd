"""The ``babelsearch`` command group and what every command shares: one-line errors, logging, JSON."""

from __future__ import annotations

import errno
import functools
import json
import logging
import re
import signal
import sqlite3
import sys

import click

from babelsearch.engine.errors import BabelsearchError, ModelUnavailable


def parse_margin_k(ctx, param, value):
    """--margin-k: a whole number or "all" (the engine checks which numbers it stores)."""
    if value is None or value == "all":
        return value
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"expected a whole number or 'all', got {value!r}") from None


# what a full disk, a file-size limit (ulimit -f), a read-only or forbidden directory raise
_FILE_SYSTEM_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EFBIG", "EROFS", "EACCES", "EPERM", "EDQUOT", "EIO")
    if hasattr(errno, name)
)


_WRITING_COMMANDS = frozenset({"index", "bank_update", "demo"})


def _file_system_error(exc: OSError, command: str) -> str:
    from babelsearch.engine.catalog import display_path

    where = display_path(str(exc.filename)) if exc.filename else "the index"
    line = f"Error: {where}: {exc.strerror or exc}"
    if command in _WRITING_COMMANDS:
        fix = {
            errno.ENOSPC: "free some space",
            errno.EFBIG: "lift the file-size limit (ulimit -f)",
            getattr(errno, "EDQUOT", errno.ENOSPC): "free some space (disk quota)",
        }.get(exc.errno or 0, "make the index directory writable" if exc.errno != errno.EIO else "fix the disk")
        # the write order (writer.py) keeps every committed state searchable, whatever write fails
        line += f"; nothing already indexed is lost and the index still searches as before; {fix} and run again"
    return line


def one_line_errors(func):
    """Turn babelsearch's own errors into one clear line and exit status 1 (2: model unavailable), never a traceback.

    So do the file system's (disk full, ``ulimit -f``, read-only, no permission) and a damaged catalog's."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            try:
                return func(*args, **kwargs)
            except sqlite3.Error as exc:
                from babelsearch.engine.catalog import sqlite_failure

                failure = sqlite_failure(exc, kwargs.get("index_dir") or "the index")
                if failure is exc:
                    raise
                raise failure from None
        except OSError as exc:
            if exc.errno not in _FILE_SYSTEM_ERRNOS:
                raise
            click.echo(_file_system_error(exc, func.__name__), err=True)
            sys.exit(1)
        except ModelUnavailable as exc:
            # exit 2, not 1: the command was right, the model's weights are missing (offline, not cached)
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except BabelsearchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted; what was saved before stays indexed, run again to resume", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="babelsearch")
def cli() -> None:
    """Cross-lingual image search: index a folder, then search it in any language."""
    _log_to_stderr()


class _EchoHandler(logging.Handler):
    """Log records as bare lines on stderr, through click (so CliRunner captures them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:
            self.handleError(record)


def _log_to_stderr() -> None:
    """The library's notes (factory chosen, retraining, ...) are INFO records of babelsearch.* loggers."""
    logger = logging.getLogger("babelsearch")
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.setLevel(logging.INFO)


_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(payload) -> str:
    """JSON as UTF-8 text. The surrogates that stand for the bytes of a file name that is not UTF-8 are
    written as ``\\udcff`` escapes (UTF-8 cannot hold them): json.loads gives the same str back, which
    os.fsencode turns into the name's bytes."""
    text = json.dumps(payload, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def main() -> None:
    if hasattr(signal, "SIGXFSZ"):
        # past a file-size limit (ulimit -f) a write then fails with EFBIG, which is reported in one
        # line, instead of the signal killing the process without a word
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    cli(prog_name="babelsearch")
