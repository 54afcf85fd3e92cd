"""Under CI=true a missing fixture (../shared, a test extra, chromium) fails; elsewhere it skips."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

NEEDS_MISSING_DATA = """
from pathlib import Path
from tests.conftest import require_module, require_path

def test_needs_data():
    require_path(Path("/nonexistent/shared/data"), "../shared/data/imagenet-sample")

def test_needs_extra():
    require_module("a_module_nobody_installed")
"""


def run_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    test_file = tmp_path / "test_needs.py"
    test_file.write_text(NEEDS_MISSING_DATA)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_missing_fixtures_skip_on_a_developer_machine(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, ci=None)
    assert done.returncode == 0, done.stdout
    assert "2 skipped" in done.stdout


def test_missing_fixtures_fail_under_ci(tmp_path: Path) -> None:
    done = run_pytest(tmp_path, ci="true")
    assert done.returncode == 1, done.stdout
    assert "2 failed" in done.stdout
    assert "CI must provide it" in done.stdout
