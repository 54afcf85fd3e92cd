"""Type-check the package as it is installed (babelsearch.engine, .indexer, .webui), from the checkout.

The repository keeps engine/, indexer/ and webui/ at the top and setuptools maps them under
babelsearch/ (pyproject.toml, package-dir). mypy knows nothing of that mapping, so this lays out the
installed tree as symbolic links in a temporary folder, runs mypy there, and prints its messages with
the checkout's own paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"engine": "engine", "indexer": "indexer", "webui": "webui"}


def main() -> int:
    tree = ROOT / ".typecheck"  # a fixed place (git-ignored), so mypy's cache there stays valid
    package = tree / "babelsearch"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    for entry in (ROOT / "babelsearch").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (package / name).symlink_to(ROOT / folder)
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "babelsearch"]
    done = subprocess.run(
        command, cwd=tree, capture_output=True, text=True, env={**os.environ, "MYPY_FORCE_COLOR": "0"}
    )
    out = done.stdout + done.stderr
    for name, folder in MAPPED.items():
        out = out.replace(f"babelsearch/{name}/", f"{folder}/")
    sys.stdout.write(out)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
