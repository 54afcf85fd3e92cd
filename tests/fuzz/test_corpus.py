"""Every kept input replayed through its target: the seeds (tests/fuzz/corpus/<target>/) and every crash the
fuzzer or a person ever found (tests/fuzz/crashes/<target>/), each a regression test; and a few seconds of
the fuzzer itself, the short budget CI spends on it (``make fuzz`` is the long one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .targets import TARGETS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
KEPT = [HERE / "corpus", HERE / "crashes"]
# cheap targets, a few seconds each: each run costs about 3 s more to start (imports, instrumentation)
CI_TARGETS = ("filters", "manifest", "query_bank")
CI_SECONDS = 3


def kept_inputs() -> list[Path]:
    return sorted(
        path
        for folder in KEPT
        for path in folder.glob("*/*")
        if path.is_file() and path.name != "README.md" and not path.name.startswith(".")
    )


@pytest.mark.timeout(60)  # a kept hang (timeout-...) fails here, not after the suite's 15 minutes
@pytest.mark.parametrize(
    "path", kept_inputs(), ids=lambda path: f"{path.parent.parent.name}:{path.parent.name}/{path.name}"
)
def test_kept_input_is_read_or_refused_as_documented(path: Path):
    TARGETS[path.parent.name].check(path.read_bytes())


def test_every_kept_folder_names_a_target_and_every_target_has_seeds():
    folders = {path.name for folder in KEPT for path in folder.iterdir() if path.is_dir()}
    assert folders <= set(TARGETS), f"folders of no target: {sorted(folders - set(TARGETS))}"
    for name in TARGETS:
        seeds = [path for path in (HERE / "corpus" / name).glob("*") if path.is_file()]
        assert seeds, f"target {name} has no seed inputs in tests/fuzz/corpus/{name}/"
        assert all(path.stat().st_size <= TARGETS[name].max_len for path in seeds), f"a seed of {name} is past max_len"


@pytest.mark.slow
def test_a_short_fuzzing_run_finds_no_new_crash(tmp_path: Path):
    command = [sys.executable, str(ROOT / "scripts" / "fuzz.py"), "--seconds", str(CI_SECONDS)]
    command += [
        "--only",
        ",".join(CI_TARGETS),
        "--corpus-dir",
        str(tmp_path / "corpus"),
        "--crash-dir",
        str(tmp_path / "crashes"),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.split()[:1] and line.split()[0] in CI_TARGETS]
    assert [row[0] for row in rows] == list(CI_TARGETS), done.stdout
    assert all(int(row[2].replace(",", "")) > 100 and row[-2:] == ["0", "ok"] for row in rows), done.stdout
    assert not any((tmp_path / "crashes").rglob("*-*")), "a crash was kept"
