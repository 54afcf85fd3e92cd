"""Every command and option of the ``babelsearch`` command line is documented in README.md."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

from babelsearch.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
EXEMPT = {"--help", "--version"}  # click's own, the same on every command


def walk(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """(command path, command) for every command and subcommand under ``group``, depth first."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from walk(command, (*path, name))


def long_options(command: click.Command) -> list[str]:
    """Every long spelling of every option (both halves of a --flag/--no-flag pair)."""
    names = []
    for param in command.params:
        if isinstance(param, click.Option):
            names += [opt for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")]
    return [name for name in names if name not in EXEMPT]


def mentioned(text: str, phrase: str) -> bool:
    # whole words only: --k must not count as documented because --keep is
    return re.search(rf"(?<![\w-]){re.escape(phrase)}(?![\w-])", text) is not None


def test_the_walk_sees_the_whole_cli():
    commands = {" ".join(path): command for path, command in walk(cli)}
    assert {"index", "search", "serve", "eval", "bank", "bank update"} <= commands.keys()
    assert "--refine-factor" in long_options(commands["search"])
    assert {"--default", "--no-default"} <= set(long_options(commands["bank update"]))


def test_every_command_and_option_is_in_the_readme():
    readme = README.read_text("utf-8")
    missing = []
    for path, command in walk(cli):
        name = " ".join(path)
        if not mentioned(readme, f"babelsearch {name}"):
            missing.append(f"babelsearch {name}")
        missing += [f"babelsearch {name} {option}" for option in long_options(command) if not mentioned(readme, option)]
    assert not missing, "README.md does not mention:\n  " + "\n  ".join(missing)
