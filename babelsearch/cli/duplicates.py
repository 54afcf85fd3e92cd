"""``babelsearch duplicates``: groups of near-duplicate images in an index."""

from __future__ import annotations

import click

from babelsearch.engine.duplicates import DUPLICATE_THRESHOLD, PIXEL_THRESHOLD

from .app import cli, json_text, one_line_errors


@cli.command()
@click.argument("index_dir", type=click.Path())
@click.option(
    "--threshold",
    type=float,
    default=DUPLICATE_THRESHOLD,
    show_default=True,
    help="Cosine at or above which two images count as near-duplicates where either has no pixel signature "
    "(indexed before 0.3, or precomputed vectors), in (0, 1] (the default was measured).",
)
@click.option(
    "--pixel-threshold",
    type=float,
    default=PIXEL_THRESHOLD,
    show_default=True,
    help="Correlation of two images' 16x16 pixel signatures at or above which they are near-duplicates, in (0, 1].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: a list of groups, each a list of {id, path}.")
@one_line_errors
def duplicates(index_dir, threshold, pixel_threshold, as_json) -> None:
    """List groups of near-duplicate images in INDEX_DIR (from the stored vectors' nearest neighbours)."""
    from babelsearch.engine import SearchEngine
    from babelsearch.engine.catalog import display_path
    from babelsearch.engine.duplicate_scan import duplicate_groups, group_rows
    from babelsearch.engine.duplicates import check_threshold

    # checked before the index is opened: a bad value is a clear error without loading anything
    threshold = check_threshold(threshold)
    pixel_threshold = check_threshold(pixel_threshold, "pixel_threshold", "correlation")
    engine = SearchEngine.open(index_dir)
    groups = group_rows(engine, duplicate_groups(engine, threshold, pixel_threshold=pixel_threshold))
    if as_json:
        click.echo(json_text([[{"id": row["id"], "path": row["path"]} for row in group] for group in groups]))
        return
    for number, group in enumerate(groups, 1):
        click.echo(f"group {number}: {len(group)} images")
        for row in group:
            # one image, one line: a newline or an escape sequence in a file name is shown escaped
            click.echo(f"  {row['id']:>8}  {display_path(row['path'])}")
    images = sum(len(group) for group in groups)
    summary = f"{len(groups)} groups, {images} images" if groups else "no near-duplicates"
    click.echo(f"{summary} (signatures correlating >= {pixel_threshold:g}, else cosine >= {threshold:g})")
