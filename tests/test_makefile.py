"""The Makefile's targets run as their help text gives them (``make -n``: printed, not run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def planned(*args: str) -> list[str]:
    """The command lines ``make`` would run for ``args``, the install step's aside."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def only(lines: list[str], needle: str) -> str:
    (line,) = [line for line in lines if needle in line]
    return line


def test_make_mutation_as_the_help_gives_it_samples_a_number_of_mutants():
    # SAMPLE once named both the shared photos and the mutants per module: the count became a path
    assert only(planned("mutation"), "scripts/mutation.py").endswith("scripts/mutation.py --sample 12 --seed 0")
    assert "--sample 5 --seed 3" in only(planned("mutation", "MUTANTS=5", "SEED=3"), "scripts/mutation.py")
    assert "--sample" not in only(planned("mutation", "MUTANTS=0"), "scripts/mutation.py")  # 0: every mutant
    # and a count given the old way no longer moves the shared photos of eval-sample
    evaluation = only(planned("eval-sample", "SAMPLE=12"), "babelsearch index")
    assert "../shared/data/imagenet-sample/images" in evaluation


def test_make_fuzz_runs_the_fuzzer_for_the_seconds_asked():
    assert only(planned("fuzz", "FUZZ_SECONDS=7"), "scripts/fuzz.py").endswith("scripts/fuzz.py --seconds 7")
