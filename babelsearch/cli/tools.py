"""``babelsearch eval`` (recall per language) and ``babelsearch models`` (the documented model specs)."""

from __future__ import annotations

import json

import click

from babelsearch.engine.rerank import RERANK_MODES as RERANK_CHOICES

from .app import cli, one_line_errors, parse_margin_k


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
@click.option("--margin-k", callback=parse_margin_k, default=None, help="Neighbourhood size (default: the index's).")
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
@one_line_errors
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


@cli.command()
@click.option("--model", default="babel-lite", show_default=True, help="Model spec to prepare.")
@one_line_errors
def prepare(model) -> None:
    """Make a model's derived files now (image tower export, dictionary, query-bank vectors), so that the
    first index run and the first search are as fast as the next ones. `make install` runs it."""
    import time

    from babelsearch.indexer.preparing import prepare_model

    started = time.perf_counter()
    for line in prepare_model(model):
        click.echo(line)
    click.echo(f"{model} ready in {time.perf_counter() - started:.1f} s")
