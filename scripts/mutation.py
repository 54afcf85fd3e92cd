"""Mutation testing of the core (cosmic-ray): how many small deliberate code changes the quick tests catch.

    python scripts/mutation.py [--sample N] [--seed S] [--only rerank,search,...]    (or: make mutation)

The working tree is never touched: the checkout is copied to a temporary folder, laid out as the
installed package (babelsearch.engine -> engine/, ...) and mutated there, one mutant at a time, each
run against the quick tests that cover that module. ``--sample N`` runs a seeded random N mutants per
module (cosmic-ray's operators make thousands; the score of a sample estimates the whole). Prints
killed/total per module and overall, and the surviving mutants (file, line, operator).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = "-x -q -p no:randomly -p no:cacheprovider -m 'not slow' --timeout 300"
# module -> the quick tests that guard it
TARGETS: dict[str, tuple[str, str]] = {
    "rerank": ("engine/rerank.py", "tests/test_rerank.py tests/test_promises.py"),
    "options": ("engine/options.py", "tests/test_search_options.py tests/test_build_search.py"),
    "search": ("engine/search.py", "tests/test_build_search.py tests/test_rerank.py tests/test_promises.py"),
    "shards": ("engine/shards.py", "tests/test_guard_shards.py tests/test_ivf_shards.py tests/test_build_search.py"),
    "bank": ("engine/bank.py", "tests/test_guard_bank.py tests/test_bank.py"),
    "writer": (
        "indexer/writer.py",
        "tests/test_guard_writer.py tests/test_incremental.py tests/test_ivf_shards.py tests/test_writer_lock.py",
    ),
}


def copy_tree(target: Path) -> Path:
    """The checkout in ``target``, laid out as installed: ``babelsearch/engine`` -> ``engine/``, ... by
    symbolic links, so whichever way pytest puts the copy on sys.path, the mutated files are imported."""
    ignore = shutil.ignore_patterns(".venv", ".git", "data", "__pycache__", ".mypy_cache", ".typecheck", "*.egg-info")
    shutil.copytree(ROOT, target, ignore=ignore, symlinks=True)
    for name in ("engine", "indexer", "webui"):
        (target / "babelsearch" / name).symlink_to(target / name)
    return target


def run_module(tree: Path, name: str, sample: int | None, seed: int) -> dict:
    module, tests = TARGETS[name]
    existing = " ".join(t for t in tests.split() if (tree / t).exists())
    config = tree / f"cr-{name}.toml"
    session = tree / f"cr-{name}.sqlite"
    python = sys.executable
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{module}"\n'
        "timeout = 300.0\n"
        "excluded-modules = []\n"
        f'test-command = "{python} -m pytest {QUICK} {existing}"\n'
        '[cosmic-ray.distributor]\nname = "local"\n'
    )
    # one faiss/OpenMP thread per test run: on a busy machine its threads spin against each other
    # (measured: an IVF fixture build 26 s with all threads, 4 s with one); the verdicts are the same
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    cosmic = [python, "-m", "cosmic_ray.cli"]
    subprocess.run([*cosmic, "init", str(config), str(session)], cwd=tree, env=env, check=True)
    _skip_annotations(session, tree / module)
    if sample:
        _keep_a_sample(session, sample, seed)
    subprocess.run([*cosmic, "exec", str(config), str(session)], cwd=tree, env=env, check=True)
    return _summary(session, tree)


def _skip_annotations(session: Path, path: Path) -> None:
    """Mutants inside type annotations are equivalent (``from __future__ import annotations``: never
    evaluated), so they are not counted."""
    import ast

    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    spans = []
    for node in ast.walk(ast.parse(path.read_text())):
        for annotation in (getattr(node, "annotation", None), getattr(node, "returns", None)):
            if annotation is not None:
                spans.append(
                    ((annotation.lineno, annotation.col_offset), (annotation.end_lineno, annotation.end_col_offset))
                )
    with use_db(str(session), WorkDB.Mode.open) as db:
        inside = [
            item.job_id
            for item in db.pending_work_items
            if all(any(lo <= tuple(m.start_pos) < hi for lo, hi in spans) for m in item.mutations)
        ]
        db.set_multiple_results(inside, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))


def _keep_a_sample(session: Path, sample: int, seed: int) -> None:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(session), WorkDB.Mode.open) as db:
        # ordered by what each mutant changes, not by job id (a random UUID per init): the same seed on
        # the same file then samples the same mutants, run after run
        items = sorted(db.pending_work_items, key=_where)
        ids = [item.job_id for item in items]
        keep = set(random.Random(seed).sample(ids, min(sample, len(ids))))
        skipped = [job for job in ids if job not in keep]
        db.set_multiple_results(skipped, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))


def _where(item) -> tuple:
    return tuple(
        (str(m.module_path), tuple(m.start_pos), tuple(m.end_pos), m.operator_name, m.occurrence)
        for m in item.mutations
    )


def _summary(session: Path, tree: Path) -> dict:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    killed = survived = incompetent = 0
    survivors = []
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            if result.worker_outcome != WorkerOutcome.NORMAL or result.test_outcome == TestOutcome.INCOMPETENT:
                incompetent += 1  # the mutant did not import or timed out: counted as caught, listed apart
                killed += 1
            elif result.test_outcome == TestOutcome.KILLED:
                killed += 1
            else:
                survived += 1
                for mutation in item.mutations:
                    survivors.append(f"{mutation.module_path}:{mutation.start_pos[0]} {mutation.operator_name}")
    return {"killed": killed, "total": killed + survived, "incompetent": incompetent, "survivors": survivors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=None, help="mutants per module (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the results here")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="babelsearch-mutation-") as tmp:
        tree = copy_tree(Path(tmp) / "tree")
        for name in names:
            results[name] = run_module(tree, name, args.sample, args.seed)
            r = results[name]
            print(f"{name}: {r['killed']}/{r['total']} killed", file=sys.stderr, flush=True)
    killed = sum(r["killed"] for r in results.values())
    total = sum(r["total"] for r in results.values())
    print("| module | killed | total | score |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        score = r["killed"] / r["total"] if r["total"] else 1.0
        print(f"| {TARGETS[name][0]} | {r['killed']} | {r['total']} | {100 * score:.0f}% |")
    print(f"| all | {killed} | {total} | {100 * killed / max(total, 1):.0f}% |")
    for r in results.values():
        for survivor in r["survivors"]:
            print(f"survived: {survivor}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
