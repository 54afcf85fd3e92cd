"""``babelsearch`` command line: it only parses, calls the library, and formats.

One module per group of commands; importing them registers their commands on the one ``cli`` group.
"""

from __future__ import annotations

from . import duplicates, indexing, searching, serving, tools  # noqa: F401  (registers the commands)
from .app import cli, main

__all__ = ["cli", "main"]
