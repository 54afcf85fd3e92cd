"""``babelsearch`` command line. It only parses, calls the library, and formats."""

from __future__ import annotations

import functools
import json
import logging
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


def _domain_errors(func):
    """Turn babelsearch's own errors into one clear line and exit status 1 (2: model unavailable), never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
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
    "--query-bank",
    "query_bank",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Extra query-bank file for margin reranking (one query a line); repeatable.",
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
    query_bank,
) -> None:
    """Index the images in SOURCES (folders, or .txt/.csv files listing paths), or --embeddings."""
    from babelsearch.indexer import IndexOptions, build_index, index_embeddings

    if bool(sources) == bool(embeddings):
        raise click.UsageError("give SOURCES (folders, path lists) or --embeddings VECTORS.npy, not both")
    if metadata and not embeddings:
        raise click.UsageError("--metadata goes with --embeddings")
    if query_bank and embeddings:
        raise click.UsageError("--query-bank needs a model to embed it; it does not go with --embeddings")
    options = IndexOptions(shard_size=shard_size, index_factory=index_factory, device=device, retrain=retrain)
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
        )
    for failed in report.skipped[:20]:
        click.echo(f"skipped {failed.path}: {failed.reason}", err=True)
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
        click.echo(json.dumps(payload, ensure_ascii=False))
        return
    if not hits:
        click.echo("no results")
    for rank, hit in enumerate(hits, 1):
        click.echo(f"{rank:>3}  {hit.score:.4f}  {hit.path}")


@cli.command()
@click.argument("index_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_domain_errors
def info(index_dir, as_json) -> None:
    """Show an index's manifest and counts."""
    from babelsearch.engine import SearchEngine

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
@_domain_errors
def serve(index_dir, host, port, threads) -> None:
    """Serve INDEX_DIR: a search page in the browser, a JSON API under /api (waitress)."""
    from waitress import create_server

    from babelsearch.engine import SearchEngine
    from babelsearch.webui import create_app
    from babelsearch.webui.state import warm_up

    engine = SearchEngine.open(index_dir)
    app = create_app({"INDEX_DIR": index_dir, "ENGINE": engine})
    try:
        # waitress refuses bodies far over the app's upload limit itself, before buffering them
        server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="babelsearch",
            max_request_body_size=4 * app.config["MAX_CONTENT_LENGTH"],
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
    cli(prog_name="babelsearch")


if __name__ == "__main__":
    main()
