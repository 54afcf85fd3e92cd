"""``make fuzz``: coverage-guided fuzzing (atheris, on libFuzzer) of babelsearch's byte-level readers.

    python scripts/fuzz.py [--seconds N] [--only a,b] [--runs N] [--corpus-dir DIR] [--crash-dir DIR] [--list]

Each target of tests/fuzz/targets.py runs in a process of its own (a hang or a blow-up of memory ends only
that target's run), seeded from tests/fuzz/corpus/<target>/ and growing a working corpus in
data/fuzz-corpus/<target>/: git-ignored, since what a run learns is this machine's; the seeds are what the
repository keeps. Everything babelsearch imports, and Pillow (whose pure-Python plugins parse the image
headers and EXIF), is instrumented, so coverage guides the mutations.

An exception a reader does not document is a crash: the first input of each distinct one (exception type
and place) is kept as <crash-dir>/<target>/crash-<sha1>, and the run goes on, so that one run can find
several bugs. A hang (-timeout) or memory past -rss_limit_mb ends the run and libFuzzer keeps the input
there (timeout-..., oom-...). tests/fuzz/test_corpus.py replays every file kept in tests/fuzz/crashes/
as a regression test; a crash already kept there is known, and finding it again is not news.

Prints one row per target (seconds, executions, coverage, corpus size, new crashes) and each new crash's
traceback; exits with 1 when a run found a new crash or failed. A run's whole output is in
<corpus-dir>/<target>.log.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests.fuzz.targets, from a checkout: the tests are not installed

SEEDS = ROOT / "tests" / "fuzz" / "corpus"
KEPT_CRASHES = ROOT / "tests" / "fuzz" / "crashes"
WORK_CORPUS = ROOT / "data" / "fuzz-corpus"
# what coverage is collected from: babelsearch, Pillow's Python side, and the targets themselves
INSTRUMENTED = ("babelsearch", "PIL", "tests")
TIMEOUT_S = 10
RSS_LIMIT_MB = 2048
# past --seconds, the time a run may take to start (imports) and stop before it is killed as stuck
GRACE_S = 120
CRASH_MARK = "=== babelsearch fuzz: new crash "
END_MARK = "=== end of crash"
# files libFuzzer keeps when it ends a run itself: replaying one would hang or exhaust memory again
HANG_PREFIXES = ("timeout-", "oom-", "slow-unit-")
# the time spent shrinking a new crash's input, well under -timeout (the minimising runs inside one input)
MINIMISE_S = 5.0


@dataclass
class Row:
    """What one target's run did."""

    target: str
    seconds: float
    executions: int
    coverage: str
    corpus: int
    new_crashes: list[Path]
    outcome: str  # "ok", "crash" (libFuzzer ended it: timeout, oom, native crash) or "failed"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker, args.crash_dir, args.libfuzzer)
    from tests.fuzz.targets import TARGETS

    if args.list:
        for name, target in TARGETS.items():
            print(f"{name:12} {target.description}")
        return 0
    names = chosen_targets(args.only, list(TARGETS))
    rows = []
    for name in names:
        print(f"fuzzing {name} for {args.seconds} s ...", flush=True)
        rows.append(fuzz_target(name, TARGETS[name].max_len, args))
    print_table(rows)
    for row in rows:
        report_crashes(row, args.corpus_dir / f"{row.target}.log")
    return 1 if any(row.new_crashes or row.outcome != "ok" for row in rows) else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target (default 60)")
    parser.add_argument("--only", default="", help="comma-separated targets (default: all)")
    parser.add_argument("--runs", type=int, default=0, help="stop each target after this many inputs (0: no limit)")
    # resolved: the workers run in the repository's root, wherever this was started from
    parser.add_argument("--corpus-dir", type=resolved, default=WORK_CORPUS, help="working corpus, a folder per target")
    parser.add_argument("--crash-dir", type=resolved, default=KEPT_CRASHES, help="where new crashes are kept")
    parser.add_argument("--list", action="store_true", help="list the targets and what each allows")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # one target, in this process
    parser.add_argument("libfuzzer", nargs="*", help=argparse.SUPPRESS)  # after --: libFuzzer's arguments
    return parser.parse_args(argv)


def resolved(text: str) -> Path:
    return Path(text).resolve()


def chosen_targets(only: str, known: list[str]) -> list[str]:
    names = [name.strip() for name in only.split(",") if name.strip()] or known
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown fuzz target(s): {', '.join(unknown)}; the targets: {', '.join(known)}")
    return names


# -- the parent: one process per target ---------------------------------------------------------------------
def fuzz_target(name: str, max_len: int, args: argparse.Namespace) -> Row:
    """Run one target's worker to the end and read what it did from its log."""
    work = args.corpus_dir / name
    crashes = args.crash_dir / name
    work.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    flags = [
        f"-max_total_time={args.seconds}",
        f"-timeout={TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-artifact_prefix={crashes}/",
        f"-max_len={max_len}",
        "-print_final_stats=1",
        *([f"-runs={args.runs}"] if args.runs else []),
    ]
    command = [sys.executable, __file__, "--worker", name, "--crash-dir", str(args.crash_dir), "--"]
    command += [str(work), str(SEEDS / name), *flags]
    log = args.corpus_dir / f"{name}.log"
    started = time.monotonic()
    with log.open("w") as out:
        try:
            code = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, timeout=args.seconds + GRACE_S
            ).returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = time.monotonic() - started
    text = log.read_text("utf-8", "replace")
    new = sorted(set(crashes.iterdir()) - before)
    outcome = "ok" if code == 0 else "failed" if code is None or not new else "crash"
    executions, coverage = run_stats(text)
    corpus = sum(1 for _ in work.iterdir())
    return Row(name, seconds, executions, coverage, corpus, new, outcome)


def run_stats(log: str) -> tuple[int, str]:
    """Executions and the last coverage line ("cov: N ft: M") of a libFuzzer log."""
    done = re.search(r"stat::number_of_executed_units: (\d+)", log)
    progress = re.findall(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", log, re.MULTILINE)
    executions = int(done.group(1)) if done else int(progress[-1][0]) if progress else 0
    coverage = f"{progress[-1][1]}/{progress[-1][2]}" if progress else "-"
    return executions, coverage


def print_table(rows: list[Row]) -> None:
    print()
    print(
        f"{'target':12} {'seconds':>8} {'executions':>11} {'exec/s':>7} {'cov/ft':>11} {'corpus':>7} {'crashes':>8}  outcome"
    )
    for row in rows:
        rate = row.executions / row.seconds if row.seconds else 0
        print(
            f"{row.target:12} {row.seconds:8.0f} {row.executions:11,} {rate:7.0f} {row.coverage:>11} {row.corpus:7,} "
            f"{len(row.new_crashes):8}  {row.outcome}"
        )


def report_crashes(row: Row, log: Path) -> None:
    """Each new crash's file and traceback; for a run libFuzzer ended (or one that failed), its log's end."""
    text = log.read_text("utf-8", "replace")
    for block in re.findall(re.escape(CRASH_MARK) + r".*?" + re.escape(END_MARK), text, re.DOTALL):
        print(f"\n[{row.target}] {block.removesuffix(END_MARK).strip()}")
    if row.outcome != "ok":
        tail = "\n".join(line for line in text.splitlines() if not line.startswith("INFO: Instrumenting"))[-4000:]
        print(f"\n[{row.target}] the run ended with {row.outcome}; the end of {log}:\n{tail}")


# -- the worker: one target under atheris ---------------------------------------------------------------------
def run_worker(name: str, crash_dir: Path, libfuzzer_args: list[str]) -> int:
    """Fuzz one target until libFuzzer stops (its time or runs are up, or it caught a hang)."""
    import atheris

    warnings.simplefilter("ignore")  # Pillow's warnings on damaged files would drown the log
    atheris.enabled_hooks.add("str")  # startswith/endswith comparisons guide the mutations too
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        from tests.fuzz.targets import TARGETS

        check = TARGETS[name].check
        guarded(check, b"")  # the readers import some modules on first use: this imports them instrumented
    known = known_signatures(check, list(dict.fromkeys([KEPT_CRASHES / name, crash_dir / name])))
    new_dir = crash_dir / name

    def test_one_input(data: bytes) -> None:
        exc = guarded(check, data)
        if exc is not None:
            keep_crash(check, data, exc, known, new_dir)

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()
    return 0


def guarded(check: Callable[[bytes], None], data: bytes) -> Exception | None:
    """The crash ``check(data)`` raises, if any (a target returns when the reader behaved)."""
    try:
        check(data)
    except Exception as exc:
        return exc
    return None


def signature(exc: BaseException) -> str:
    """What tells two crashes apart: the exception's type and the innermost function that raised it (for a
    broken invariant, the promise it names). Not the line: one unguarded int() is one bug, whichever of
    the lines that call it an input reaches."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name} in {frames[-1].name}" if frames else "?"
    promise = f" ({exc.args[0]})" if type(exc).__name__ == "InvariantBroken" and exc.args else ""
    return f"{type(exc).__name__}{promise} at {where}"


def known_signatures(check: Callable[[bytes], None], folders: list[Path]) -> set[str]:
    """The signatures of the crashes already kept, replayed (hangs and blow-ups are not replayed)."""
    known = set()
    for folder in folders:
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            if path.is_file() and path.name != "README.md" and not path.name.startswith(HANG_PREFIXES):
                exc = guarded(check, path.read_bytes())
                if exc is not None:
                    known.add(signature(exc))
    return known


def keep_crash(check: Callable[[bytes], None], data: bytes, exc: Exception, known: set[str], folder: Path) -> None:
    """Keep the input of a crash not seen before, minimised, and print its traceback for the report."""
    found = signature(exc)
    if found in known:
        return
    known.add(found)
    kept = minimised(check, data, found)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{hashlib.sha1(kept).hexdigest()}"
    path.write_bytes(kept)
    trace = "".join(traceback.format_exception(exc))
    print(
        f"\n{CRASH_MARK}{found}\ninput: {path} ({len(kept)} bytes, minimised from {len(data)}) {kept[:200]!r}\n"
        f"{trace}{END_MARK}",
        file=sys.stderr,
        flush=True,
    )


def minimised(check: Callable[[bytes], None], data: bytes, found: str) -> bytes:
    """The shortest input, found within MINIMISE_S, that crashes the same way: chunks of halving size cut out
    while the crash stays. A kept input a person can read is worth a few seconds of fuzzing; libFuzzer's own
    -minimize_crash cannot help, since it never sees the exceptions the worker catches to go on."""
    deadline = time.monotonic() + MINIMISE_S
    chunk = len(data) // 2
    while chunk and time.monotonic() < deadline:
        at = 0
        while at < len(data) and time.monotonic() < deadline:
            candidate = data[:at] + data[at + chunk :]
            crash = guarded(check, candidate)
            if crash is not None and signature(crash) == found:
                data = candidate
            else:
                at += chunk
        chunk //= 2
    return data


if __name__ == "__main__":
    sys.exit(main())
