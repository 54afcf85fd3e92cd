"""``babelsearch search`` and ``babelsearch info``."""

from __future__ import annotations

import json
import sys
import time

import click

from babelsearch.engine.layout import expand_home
from babelsearch.engine.rerank import RERANK_MODES as RERANK_CHOICES

from .app import cli, json_text, one_line_errors, parse_margin_k


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
    callback=parse_margin_k,
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
@click.option(
    "--lang",
    default=None,
    metavar="CODE",
    help="The query's language (ISO 639, e.g. de or pt-BR), for models that read it (NLLB); default: detected.",
)
@click.option(
    "--folder",
    "folders",
    multiple=True,
    metavar="DIR",
    help="Only images under this folder (repeat for several). A folder that exists here is taken as its "
    "full path; any other name matches a folder of that name anywhere (e.g. 2024/summer).",
)
@click.option("--exclude", "excluded", multiple=True, metavar="DIR", help="Leave out images under this folder.")
@click.option("--after", default=None, metavar="DATE", help="Only photos taken on or after DATE (2024-07-14).")
@click.option("--before", default=None, metavar="DATE", help="Only photos taken before DATE (EXIF date, else mtime).")
@click.option("--orientation", type=click.Choice(["landscape", "portrait", "square"]), default=None)
@click.option("--min-width", type=click.IntRange(1), default=None, help="Only images at least this wide (pixels).")
@click.option("--min-height", type=click.IntRange(1), default=None, help="Only images at least this high (pixels).")
@click.option(
    "--type", "types", multiple=True, metavar="TYPE", help="Only this file type: jpeg, png, heic, ... (repeat)."
)
@click.option("--min-score", type=float, default=None, help="Leave out hits scoring below this (the final score).")
@click.option(
    "--collapse/--no-collapse",
    default=False,
    show_default=True,
    help="Fold near-duplicates (the same shot in two sizes, bursts) into the best one of them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@one_line_errors
def search(
    index_dir,
    query,
    k,
    rerank,
    margin_k,
    nprobe,
    refine_factor,
    lang,
    folders,
    excluded,
    after,
    before,
    orientation,
    min_width,
    min_height,
    types,
    min_score,
    collapse,
    as_json,
) -> None:
    """Search INDEX_DIR for QUERY, in any language.

    Hits the index's calibration finds likely relevant come first; a line marks where weaker matches begin."""
    from babelsearch.engine import SearchEngine
    from babelsearch.engine.filters import Where
    from babelsearch.engine.options import SearchOptions

    # checked before the index is opened: a bad option is a clear error without loading anything
    where = Where(
        folders=tuple(_folder_arg(f) for f in folders),
        exclude_folders=tuple(_folder_arg(f) for f in excluded),
        after=after,
        before=before,
        orientation=orientation,
        min_width=min_width,
        min_height=min_height,
        types=types,
    )
    options = SearchOptions(
        k=k,
        rerank=rerank,
        margin_k=margin_k,
        nprobe=nprobe,
        refine_factor=refine_factor,
        lang=lang or None,
        where=where,
        min_score=min_score,
        collapse=collapse,
    )
    engine = SearchEngine.open(index_dir)
    started = time.perf_counter()
    hits = engine.search(query, options=options)
    took_ms = (time.perf_counter() - started) * 1000
    readings = engine.query_readings(query)
    if as_json:
        language = engine.query_language(query, options.lang)
        payload = {
            "query": query,
            "k": k,
            "took_ms": round(took_ms, 2),
            "language": language.to_json(),
            "readings": readings,
            "filters": options.where.to_json() if options.where else None,
            "results": [hit.to_json() for hit in hits],
        }
        click.echo(json_text(payload))
        return
    from babelsearch.engine.catalog import display_path

    if readings:
        click.echo(f"read as: {display_path(', '.join(readings))}")
    if not hits:
        click.echo("no results")
    # the divider is for people: a pipe or a file gets one line per hit, as scripts read them
    divided = not _is_terminal()
    for rank, hit in enumerate(hits, 1):
        if hit.relevant is False and not divided:
            click.echo("  -- weaker matches --")
            divided = True
        similar = f"  (+{len(hit.similar)} similar)" if hit.similar else ""
        # one hit, one line: a newline or an escape sequence in a file name is shown escaped
        click.echo(f"{rank:>3}  {hit.score:.4f}  {display_path(hit.path)}{similar}")


def _is_terminal() -> bool:
    return sys.stdout.isatty()


def _folder_arg(folder: str) -> str:
    """A folder as the catalog has it: one that exists here is its resolved path (the indexer stores
    resolved paths), any other is kept as a name to match anywhere."""

    path = expand_home(folder)
    return str(path.resolve()) if path.is_dir() else folder


@cli.command()
@click.argument("index_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--check",
    is_flag=True,
    help="Verify that the manifest, shard, vector, id and catalog files agree; exit 1 listing the problems.",
)
@one_line_errors
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
    for key in ("nprobe", "refine_factor", "target_recall", "target_latency_ms", "measured_recall", "measured_p50_ms"):
        if key in settings:
            click.echo(f"{key:>15}: {settings[key]}")
    if "tuning_note" in settings:
        click.echo(f"{'tuning':>15}: {settings['tuning_note']}")
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
        click.echo(json_text(report.to_json()))
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
