"""The README's Python examples, run as a user would paste them (sqlite-utils and datasette test their docs).

Each ```python block runs in a fresh namespace, in README order, inside a prepared tmp world: HOME is a
tmp folder whose ``~/Pictures`` holds a few generated photos, the cwd holds ``query.jpg``, the model is
the real bundled default (babel-lite, offline), and the HTTP-client example talks to a live server on a
free loopback port serving the index the earlier example built.
"""

from __future__ import annotations

import re
import traceback
from contextlib import ExitStack
from pathlib import Path

import pytest

from babelsearch.engine.cache import user_cache_dir

from .conftest import COLOURS, live_server, write_image

README = Path(__file__).resolve().parent.parent / "README.md"
README_SERVER = "http://127.0.0.1:8000"
README_INDEX = "my-index"  # what the README's examples index into and serve


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every ```python block, in order."""
    return [
        (text.count("\n", 0, match.start()) + 2, match.group(1))
        for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)
    ]


@pytest.fixture
def readme_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # the real cache keeps babel-lite's class space (1-2 min to compute); a tmp HOME would hide it
    monkeypatch.setenv("BABELSEARCH_CACHE", str(user_cache_dir()))
    home = tmp_path / "home"
    for n, (colour, rgb) in enumerate(COLOURS.items()):
        write_image(home / "Pictures" / f"{colour}.jpg", rgb, size=(96, 72), noise_seed=n)
        write_image(home / "Pictures" / "2024" / f"{colour}-again.png", rgb, size=(80, 80), noise_seed=10 + n)
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    write_image(work / "query.jpg", COLOURS["blue"], size=(96, 72), noise_seed=99)
    monkeypatch.chdir(work)
    return work


def test_readme_has_python_examples():
    blocks = python_blocks(README.read_text("utf-8"))
    assert len(blocks) >= 2, "README.md lost its Python examples (or this test's parser broke)"
    assert any(README_SERVER in source for _, source in blocks), "the HTTP-client example moved its address"


def test_readme_python_examples_run(readme_world: Path):
    blocks = python_blocks(README.read_text("utf-8"))
    with ExitStack() as stack:
        url = None
        for line, source in blocks:
            if README_SERVER in source:
                if url is None:
                    if not (readme_world / README_INDEX).exists():
                        pytest.fail(f"README.md line {line}: no earlier example built {README_INDEX!r} to serve")
                    url = stack.enter_context(live_server({"INDEX_DIR": str(readme_world / README_INDEX)}))
                source = source.replace(README_SERVER, url)
            failure = None
            try:
                # padded so the traceback's line numbers are README.md's own
                exec(compile("\n" * (line - 1) + source, "README.md", "exec"), {"__name__": "__main__"})
            except Exception:
                failure = traceback.format_exc()
            if failure:
                pytest.fail(f"README.md's python block at line {line} failed:\n\n{source}\n{failure}", pytrace=False)
