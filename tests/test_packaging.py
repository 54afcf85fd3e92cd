"""The wheel installs one import name, babelsearch, and works outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("babelsearch-*.whl")
    return found


def test_wheel_installs_only_babelsearch_at_top_level(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"babelsearch"}
    for expected in (
        "babelsearch/engine/search.py",
        "babelsearch/indexer/build.py",
        "babelsearch/webui/client.py",
        "babelsearch/webui/templates/search.html",
        "babelsearch/webui/static/app.js",
        "babelsearch/engine/resources/query_bank.txt",
        "babelsearch/engine/resources/imagenet_classes.tsv",
    ):
        assert expected in names
    assert not any(name.startswith(("tests/", "benchmarks/", "scripts/")) for name in names)


def test_installed_wheel_imports_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import babelsearch, babelsearch.engine, babelsearch.indexer, babelsearch.webui.client\n"
        "print(babelsearch.engine.__file__)\n"
        "print(babelsearch.SearchEngine.__module__, babelsearch.build_index.__module__, babelsearch.Client.__name__)\n"
        "import importlib.util\n"
        "print([n for n in ('engine', 'indexer', 'webui') if importlib.util.find_spec(n)])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # not the checkout: nothing there shadows the installed package
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    first, second, third = done.stdout.splitlines()
    assert first.startswith(str(target))
    assert second == "babelsearch.engine.search babelsearch.indexer.build Client"
    assert third == "[]"  # no generic top-level names come with it


def test_the_checkout_folders_are_not_importable_by_their_bare_names() -> None:
    done = subprocess.run([sys.executable, "-c", "import engine"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0
    assert "import babelsearch.engine" in done.stderr


def test_the_public_api_is_reachable_from_the_top_level_name() -> None:
    import babelsearch

    assert sorted(babelsearch.__all__) == sorted(babelsearch._EXPORTS)
    for name in babelsearch.__all__:
        assert getattr(babelsearch, name) is not None
    assert issubclass(babelsearch.IndexBusy, babelsearch.BabelsearchError)
    # every error the library raises to a user can be caught by its own name from the top level
    from babelsearch.engine import errors

    raised = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}
    assert raised <= set(babelsearch.__all__), raised - set(babelsearch.__all__)
