"""``babelsearch serve`` (the web UI and JSON API) and ``babelsearch demo``."""

from __future__ import annotations

import click

from babelsearch.webui.server import CHANNEL_TIMEOUT, CONNECTION_LIMIT

from .app import cli, one_line_errors


@cli.command()
@click.argument("index_dir", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0: any free port.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256), help="Worker threads.")
@click.option(
    "--connection-limit",
    default=CONNECTION_LIMIT,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Open connections at most (idle ones included); more wait to be accepted.",
)
@click.option(
    "--channel-timeout",
    default=CHANNEL_TIMEOUT,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds an idle or half-sent connection is kept open.",
)
@one_line_errors
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
@one_line_errors
def demo(data_dir, k) -> None:
    """Build the demo collection, index it, and search it in several languages."""
    from pathlib import Path

    from babelsearch.engine import SearchEngine
    from babelsearch.indexer import build_index

    from ..demo import DEMO_QUERIES, assemble_demo_photos

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
