"""``babelsearch index`` and ``babelsearch bank update``: the commands that write an index."""

from __future__ import annotations

import click

from babelsearch.engine.rerank import RERANK_MODES as RERANK_CHOICES
from babelsearch.indexer.files import DEFAULT_LOCK_WAIT

from .app import cli, one_line_errors, parse_margin_k

# every command that writes an index waits for another run writing it (indexer.files.acquire_lock)
wait_option = click.option(
    "--wait",
    "lock_wait",
    default=DEFAULT_LOCK_WAIT,
    show_default=True,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="While another run writes the index, wait this long for it to finish (0: refuse at once).",
)


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
@click.option(
    "--target-recall",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="recall@10 the search defaults are tuned to, measured against exact search (default: the index's own, else 0.95).",
)
@click.option(
    "--target-latency",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Instead: the p50 milliseconds to tune to, taking the highest recall within it.",
)
@click.option(
    "--batch-size",
    default=None,
    type=click.IntRange(1, 4096),
    help="Images per model call (default: the model's own; 32 for babel-lite, larger on a GPU).",
)
@click.option(
    "--dim",
    default=None,
    type=click.IntRange(1),
    help="Matryoshka models (e.g. nllb-clip-*/mrl): keep the first N dimensions (default: the index's own, else all).",
)
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
@wait_option
@one_line_errors
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
    target_recall,
    target_latency,
    batch_size,
    dim,
    workers,
    quiet,
    max_file_mb,
    repair,
    query_bank,
    ray_address,
    lock_wait,
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
    if target_recall is not None and target_latency is not None:
        raise click.UsageError("give --target-recall or --target-latency, not both")
    if dim is not None and embeddings:
        raise click.UsageError("--dim cuts a model's vectors; --embeddings are vectors already, added as they are")
    options = IndexOptions(
        shard_size=shard_size,
        index_factory=index_factory,
        device=device,
        retrain=retrain,
        target_recall=target_recall,
        target_latency=target_latency,
        max_file_bytes=max_file_mb << 20,
        repair=repair,
        dim=dim,
        lock_wait=lock_wait,
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
    callback=parse_margin_k,
    default=None,
    help="New default neighbourhood size: 1-16, 32, 64, 128, 256 or all.",
)
@click.option("--candidates", type=click.IntRange(1, 1000), default=None, help="New default candidate pool.")
@wait_option
@one_line_errors
def bank_update(index_dir, bank_files, include_default, rerank, margin_k, candidates, lock_wait) -> None:
    """Recompute every image's query-bank term (images are not re-embedded)."""
    from babelsearch.indexer.bank_terms import update_image_terms

    chosen = {"mode": rerank, "margin_k": margin_k, "candidates": candidates}
    report = update_image_terms(
        index_dir,
        bank_files=list(bank_files) or None,
        include_default=include_default,
        recompute=True,
        rerank_defaults={key: value for key, value in chosen.items() if value is not None},
        lock_wait=lock_wait,
    )
    click.echo(report.summary())
