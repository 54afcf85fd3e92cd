"""``babelsearch`` command line. It only parses, calls the library, and formats."""

from __future__ import annotations

import errno
import functools
import json
import logging
import re
import signal
import sqlite3
import sys
import time

import click

from babelsearch.engine.errors import BabelsearchError, ModelUnavailable
from babelsearch.engine.rerank import RERANK_MODES as RERANK_CHOICES


def _margin_k(ctx, param, value):
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


def _domain_errors(func):
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


@cli.command()
@click.argument("sources", nargs=-1)
@click.option("--index", "index_dir", required=True, type=click.Path(file_okay=False), help="Index directory.")
@click.option("--model", default=None, help="Model spec (default: babel-lite, or the index's own).")
@click.option(
    "--embeddings",
    type=click.Path(dir_okay=False),
    default=None,
    help="Index the rows of this .npy matrix instead of images (row i gets id i).",
)
@click.option(
    "--metadata",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --embeddings: a CSV with an id and/or path column, one row per vector.",
)
@click.option(
    "--shard-size",
    type=click.IntRange(1),
    default=None,
    help="Vectors per shard file (default 262144, or the index's own).",
)
@click.option(
    "--index-factory",
    default=None,
    help="faiss factory string, e.g. 'IVF4096,PQ32' (default: chosen from the collection size).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where faiss trains and adds vectors.",
)
@click.option("--retrain", is_flag=True, help="Retrain the quantizer even if the collection has not outgrown it.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1, 4096))
@click.option("--workers", default=None, type=click.IntRange(1, 64), help="Decode threads.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option(
    "--max-file-mb",
    default=1024,
    show_default=True,
    type=click.IntRange(1),
    help="Skip files larger than this many MiB (with that reason) without reading them.",
)
@click.option(
    "--repair",
    is_flag=True,
    help="Drop damaged or missing shards (and a damaged catalog) and embed their images again from SOURCES.",
)
@click.option(
    "--query-bank",
    "query_bank",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Extra query-bank file for margin reranking (one query a line); repeatable.",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Decode and embed on Ray: alone, a local Ray on this machine; auto or HOST:PORT, a running cluster.",
)
@_domain_errors
def index(
    sources,
    index_dir,
    model,
    embeddings,
    metadata,
    shard_size,
    index_factory,
    device,
    retrain,
    batch_size,
    workers,
    quiet,
    max_file_mb,
    repair,
    query_bank,
    ray_address,
) -> None:
    """Index the images in SOURCES (folders, or .txt/.csv files listing paths), or --embeddings."""
    from babelsearch.indexer import IndexOptions, build_index, index_embeddings

    if ray_address is not None:
        from babelsearch.indexer.distributed import check_address

        check_address(ray_address)  # first: `--ray SOURCE` took the source as its address
    if bool(sources) == bool(embeddings):
        raise click.UsageError("give SOURCES (folders, path lists) or --embeddings VECTORS.npy, not both")
    if metadata and not embeddings:
        raise click.UsageError("--metadata goes with --embeddings")
    if query_bank and embeddings:
        raise click.UsageError("--query-bank needs a model to embed it; it does not go with --embeddings")
    if ray_address is not None and embeddings:
        raise click.UsageError("--ray embeds images on Ray; --embeddings are vectors already, added here")
    options = IndexOptions(
        shard_size=shard_size,
        index_factory=index_factory,
        device=device,
        retrain=retrain,
        max_file_bytes=max_file_mb << 20,
        repair=repair,
    )
    if embeddings:
        report = index_embeddings(
            embeddings, index_dir, metadata=metadata, model=model, options=options, progress=not quiet
        )
    else:
        report = build_index(
            sources,
            index_dir,
            model=model,
            batch_size=batch_size,
            workers=workers,
            progress=not quiet,
            options=options,
            query_bank=list(query_bank) or None,
            ray=ray_address,
        )
    from babelsearch.engine.catalog import display_path

    for failed in report.skipped[:20]:
        # a file name may hold a newline, escape sequences or bytes that are not UTF-8: shown escaped
        click.echo(f"skipped {display_path(str(failed.path))}: {display_path(failed.reason)}", err=True)
    if len(report.skipped) > 20:
        click.echo(f"... and {len(report.skipped) - 20} more skipped", err=True)
    click.echo(report.summary())


@cli.command()
@click.argument("index_dir", type=click.Path())
@click.argument("query")
@click.option("--k", "-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option(
    "--rerank",
    type=click.Choice(RERANK_CHOICES),
    default=None,
    help="Candidate reranking (default: the index's, normally distance).",
)
@click.option(
    "--margin-k",
    callback=_margin_k,
    default=None,
    help="Neighbourhood size for reranking: 1-16, 32, 64, 128, 256 or all.",
)
@click.option(
    "--nprobe",
    type=click.IntRange(1),
    default=None,
    help="Inverted lists to scan (IVF indexes; default: the index's own).",
)
@click.option(
    "--refine-factor",
    type=click.IntRange(1, 100),
    default=None,
    help="Re-score k * this many candidates exactly (default: the index's own).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_domain_errors
def search(index_dir, query, k, rerank, margin_k, nprobe, refine_factor, as_json) -> None:
    """Search INDEX_DIR for QUERY, in any language."""
    from babelsearch.engine import SearchEngine
    from babelsearch.engine.options import SearchOptions

    # checked before the index is opened: a bad option is a clear error without loading anything
    options = SearchOptions(k=k, rerank=rerank, margin_k=margin_k, nprobe=nprobe, refine_factor=refine_factor)
    engine = SearchEngine.open(index_dir)
    started = time.perf_counter()
    hits = engine.search(query, options=options)
    took_ms = (time.perf_counter() - started) * 1000
    if as_json:
        payload = {
            "query": query,
            "k": k,
            "took_ms": round(took_ms, 2),
            "results": [hit.to_json() for hit in hits],
        }
        click.echo(_json_text(payload))
        return
    from babelsearch.engine.catalog import display_path

    if not hits:
        click.echo("no results")
    for rank, hit in enumerate(hits, 1):
        # one hit, one line: a newline or an escape sequence in a file name is shown escaped
        click.echo(f"{rank:>3}  {hit.score:.4f}  {display_path(hit.path)}")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_text(payload) -> str:
    """JSON as UTF-8 text. The surrogates that stand for the bytes of a file name that is not UTF-8 are
    written as ``\\udcff`` escapes (UTF-8 cannot hold them): json.loads gives the same str back, which
    os.fsencode turns into the name's bytes."""
    text = json.dumps(payload, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@cli.command()
@click.argument("index_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="Verify that the manifest, shard, vector, id and catalog files agree; exit 1 listing the problems.",
)
@_domain_errors
def info(index_dir, as_json, check) -> None:
    """Show an index's manifest and counts (--check: verify every file)."""
    from babelsearch.engine import SearchEngine

    if check:
        _check(index_dir, as_json)
        return
    details = SearchEngine.open(index_dir).info()
    if as_json:
        click.echo(json.dumps(details, ensure_ascii=False, indent=2))
        return
    for key in ("format_version", "model", "dim", "metric", "factory", "images", "catalog_images", "vectors"):
        click.echo(f"{key:>15}: {details.get(key)}")
    click.echo(f"{'shards':>15}: {len(details.get('shards', []))} (at most {details.get('shard_size')} vectors each)")
    settings = details.get("settings", {})
    for key in ("nprobe", "refine_factor"):
        if key in settings:
            click.echo(f"{key:>15}: {settings[key]}")
    bank = settings.get("query_bank")
    rerank = settings.get("rerank", {})
    if bank:
        sources = ", ".join((["default"] if bank.get("default") else []) + bank.get("user_sources", []))
        click.echo(f"{'query bank':>15}: {bank.get('texts')} texts ({sources})")
        click.echo(
            f"{'rerank':>15}: {rerank.get('mode')}, margin_k {rerank.get('margin_k')}, "
            f"{rerank.get('candidates')} candidates"
        )
    click.echo(f"{'updated':>15}: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(details['updated']))}")


def _check(index_dir, as_json: bool) -> None:
    from babelsearch.engine.catalog import display_path
    from babelsearch.engine.check import check_index

    report = check_index(index_dir)
    if as_json:
        click.echo(_json_text(report.to_json()))
    else:
        for problem in report.problems:
            click.echo(f"problem: {display_path(problem)}")
        for warning in report.warnings:
            click.echo(f"warning: {display_path(warning)}")
        counts = f"{report.images} images, {report.vectors} vectors in {report.shards} shards"
        if report.ok:
            click.echo(f"ok: {display_path(str(index_dir))} ({counts})")
        else:
            click.echo(
                f"damaged: {display_path(str(index_dir))} has {len(report.problems)} problems ({counts}); "
                f"`babelsearch index SOURCES --index {display_path(str(index_dir))} --repair` drops what they "
                "spoil and embeds those images again",
                err=True,
            )
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.option(
    "--data",
    "data_dir",
    default="data",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo photos and index go.",
)
@click.option("--k", "-k", default=3, show_default=True, type=click.IntRange(1, 20))
@_domain_errors
def demo(data_dir, k) -> None:
    """Build the demo collection, index it, and search it in several languages."""
    from pathlib import Path

    from babelsearch.engine import SearchEngine
    from babelsearch.indexer import build_index

    from .demo import DEMO_QUERIES, assemble_demo_photos

    photos_dir, index_dir = Path(data_dir) / "demo-photos", Path(data_dir) / "demo-index"
    photos = assemble_demo_photos(photos_dir)
    click.echo(f"demo collection: {len(photos)} photos in {photos_dir}")
    report = build_index([photos_dir], index_dir, progress=True)
    click.echo(report.summary())
    engine = SearchEngine.open(index_dir)
    for query, hits in zip(DEMO_QUERIES, engine.search_many(DEMO_QUERIES, k=k)):
        shown = ", ".join(f"{Path(hit.path).name} ({hit.score:.3f})" for hit in hits)
        click.echo(f"{query:>10}  ->  {shown}")
    click.echo(
        "\nSearch your own photos:\n"
        "  .venv/bin/babelsearch index ~/Pictures --index my-index\n"
        '  .venv/bin/babelsearch search my-index "ein Hund im Schnee"'
    )


@cli.command()
@click.argument("index_dir", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256), help="Worker threads.")
@click.option(
    "--connection-limit",
    default=1000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Open connections at most (idle ones included); more wait to be accepted.",
)
@click.option(
    "--channel-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds an idle or half-sent connection is kept open.",
)
@_domain_errors
def serve(index_dir, host, port, threads, connection_limit, channel_timeout) -> None:
    """Serve INDEX_DIR: a search page in the browser, a JSON API under /api (waitress).

    New images indexed into INDEX_DIR meanwhile are served without a restart."""
    from babelsearch.engine import SearchEngine
    from babelsearch.webui import create_app
    from babelsearch.webui.server import create_server
    from babelsearch.webui.state import warm_up

    engine = SearchEngine.open(index_dir)
    app = create_app({"INDEX_DIR": index_dir, "ENGINE": engine})
    try:
        # the limits that keep slow and idle clients from starving it: babelsearch.webui.server
        server = create_server(
            app, host, port, threads, connection_limit=connection_limit, channel_timeout=channel_timeout
        )
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo(f"loading model {engine.manifest.model} ...")
    warm_up(engine)  # bound first, so a busy port fails fast; connections wait until the model is ready
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host}: anyone who can reach it can search and view these photos", err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving {index_dir} ({engine.count} images) at http://{shown}:{server.effective_port}/")
    click.echo("Ctrl+C stops", err=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@cli.command("eval")
@click.argument("index_dir", type=click.Path())
@click.option(
    "--truth",
    required=True,
    type=click.Path(dir_okay=False),
    help="TSV: path<TAB>class_idx (or a header with path/file and class_idx), or caption truth "
    "with query and path columns (optionally language).",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON: language -> [[class indices], [class names]] (class truth only).",
)
@click.option("--languages", default=None, help="Comma-separated languages (default: all).")
@click.option("--k", "ks", default="1,5,10", show_default=True, help="Comma-separated recall cut-offs.")
@click.option(
    "--rerank",
    "modes",
    default="distance,margin,none",
    show_default=True,
    help=f"Comma-separated rerank modes to compare ({', '.join(RERANK_CHOICES)}).",
)
@click.option("--margin-k", callback=_margin_k, default=None, help="Neighbourhood size (default: the index's).")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write eval.md, eval.json and a recall chart (PNG) here.",
)
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep encoded queries here, so a rerun skips encoding.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_domain_errors
def eval_command(index_dir, truth, labels, languages, ks, modes, margin_k, out_dir, cache_dir, as_json, quiet) -> None:
    """Recall@k per language on INDEX_DIR, every rerank mode side by side (Babel-ImageNet protocol)."""
    from babelsearch.engine import SearchEngine
    from babelsearch.evaluation import evaluate, load_eval_set, write_report

    try:
        cutoffs = [int(k) for k in ks.split(",") if k.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {ks!r}", param_hint="--k") from None
    eval_set = load_eval_set(truth, labels, languages.split(",") if languages else None)
    engine = SearchEngine.open(index_dir)
    report = evaluate(
        engine,
        eval_set,
        ks=cutoffs,
        modes=[m.strip() for m in modes.split(",") if m.strip()],
        margin_k=margin_k,
        cache_dir=cache_dir,
        progress=not quiet,
    )
    written = write_report(report, out_dir) if out_dir else []
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        click.echo(report.markdown())
    for path in written:
        click.echo(f"wrote {path}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json) -> None:
    """The documented model specs for --model: dimension, languages, licence, local weights, published figures."""
    from babelsearch.engine.encoders.local import MODELS_ENV, hub_cache_dir
    from babelsearch.engine.encoders.specs import BENCHMARKS, SOURCES, describe_models

    rows = describe_models()
    if as_json:
        payload = {"models": rows, "cache": hub_cache_dir(), "sources": SOURCES}
        click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    header = ["spec", "dim", "languages", "licence", "local", *BENCHMARKS]
    table = [
        [
            row["spec"],
            str(row["dim"]),
            row["languages"],
            row["licence"],
            "yes" if row["present"] else "no",
            *(next((f"{f['value']:.3f}" for f in row["figures"] if f["benchmark"] == b), "-") for b in BENCHMARKS),
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    for line in [header, *table]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    click.echo("")
    for key, source in SOURCES.items():
        click.echo(f"figures ({key}): {source}")
    click.echo(
        f"weights cache: {hub_cache_dir()} (set {MODELS_ENV} to use another; --model local:DIR for a copy you have)"
    )


@cli.group()
def bank() -> None:
    """The query bank behind margin reranking."""


@bank.command("update")
@click.argument("index_dir", type=click.Path())
@click.option(
    "--from",
    "bank_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="User bank file (one query a line), replacing the index's user bank; repeatable.",
)
@click.option(
    "--default/--no-default",
    "include_default",
    default=None,
    help="Include the shipped default bank (default: as before, normally yes).",
)
@click.option("--rerank", type=click.Choice(RERANK_CHOICES), default=None, help="New default rerank mode.")
@click.option(
    "--margin-k",
    callback=_margin_k,
    default=None,
    help="New default neighbourhood size: 1-16, 32, 64, 128, 256 or all.",
)
@click.option("--candidates", type=click.IntRange(1, 1000), default=None, help="New default candidate pool.")
@_domain_errors
def bank_update(index_dir, bank_files, include_default, rerank, margin_k, candidates) -> None:
    """Recompute every image's query-bank term (images are not re-embedded)."""
    from babelsearch.indexer.bank_terms import update_image_terms

    chosen = {"mode": rerank, "margin_k": margin_k, "candidates": candidates}
    report = update_image_terms(
        index_dir,
        bank_files=list(bank_files) or None,
        include_default=include_default,
        recompute=True,
        rerank_defaults={key: value for key, value in chosen.items() if value is not None},
    )
    click.echo(report.summary())


def main() -> None:
    if hasattr(signal, "SIGXFSZ"):
        # past a file-size limit (ulimit -f) a write then fails with EFBIG, which is reported in one
        # line, instead of the signal killing the process without a word
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    cli(prog_name="babelsearch")


if __name__ == "__main__":
    main()
