"""Quality floors: recall@10 per language, all 93 Babel-ImageNet languages, on the shared sample.

The floors live in one place, tests/quality_floors.tsv (language, queries, floor, measured, measured_all);
its header says how they were measured. Each floor is the measured recall less one query, so two lost
queries of a language fail. One evaluation over every language (the index's default reranking, as a
user gets it) must meet every floor; a failure lists every language under its floor, not only the first.

The evaluation takes the first QUERIES_PER_LANGUAGE class names of each language: encoding all 37,438
takes about 10 CPU-minutes cold, these 5,580 about one, which CI can pay on every run. The query vectors
are also kept in the user cache (``$BABELSEARCH_CACHE/eval-queries``, keyed by the model's fingerprint
and the texts), so a rerun only searches. ``measured_all`` keeps the whole-set figures for reference.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from babelsearch.engine import SearchEngine
from babelsearch.engine.cache import user_cache_dir
from babelsearch.evaluation import evaluate, load_eval_set

from .conftest import BABEL_IMAGENET, SHARED_SAMPLE, require_path

FLOORS = Path(__file__).with_name("quality_floors.tsv")
QUERIES_PER_LANGUAGE = 60


def read_floors(path: Path | None = None) -> dict[str, tuple[float, float, int]]:
    """language -> (floor, measured, queries); '#' lines are the measurement notes."""
    path = FLOORS if path is None else path
    rows = [line.split("\t") for line in path.read_text("utf-8").splitlines() if line and not line.startswith("#")]
    header, body = rows[0], rows[1:]
    assert header == ["language", "queries", "floor", "measured", "measured_all"], header
    return {language: (float(floor), float(measured), int(n)) for language, n, floor, measured, _ in body}


def test_the_floors_cover_every_language_about_a_point_below_the_measurement():
    floors = read_floors()
    assert len(floors) == 93
    if BABEL_IMAGENET.exists():  # the same 93 as the evaluation data (checked where ../shared is)
        assert sorted(floors) == sorted(json.loads(BABEL_IMAGENET.read_text("utf-8")))
    for language, (floor, measured, queries) in floors.items():
        assert 0 < queries <= QUERIES_PER_LANGUAGE and 0 <= floor < measured <= 1, language
        # one query's worth below: less would flake on a tie, more would hide a regression
        assert measured - floor == pytest.approx(1 / queries, abs=2e-4), (
            f"{language}: floor {floor}, measured {measured}"
        )
    header = [line for line in FLOORS.read_text("utf-8").splitlines() if line.startswith("#")]
    assert any("babelsearch eval" in line for line in header) and any("rerank" in line for line in header)


@pytest.mark.slow
def test_every_language_meets_its_recall_floor(shared_sample_index: Path):
    require_path(BABEL_IMAGENET, "../shared/data/babel-imagenet")
    floors = read_floors()
    engine = SearchEngine.open(shared_sample_index)
    mode = engine.rerank_defaults["mode"]
    eval_set = load_eval_set(SHARED_SAMPLE / "labels.tsv", BABEL_IMAGENET)
    first = {language: queries[:QUERIES_PER_LANGUAGE] for language, queries in eval_set.queries.items()}
    eval_set = dataclasses.replace(eval_set, queries=first)
    started = time.perf_counter()
    report = evaluate(engine, eval_set, ks=[10], modes=[mode], cache_dir=user_cache_dir() / "eval-queries")
    print(f"evaluation of {len(report.languages)} languages ({mode}): {time.perf_counter() - started:.1f} s")
    measured = {result.language: result.recall[mode][10] for result in report.languages}
    assert sorted(measured) == sorted(floors), "the floors file and the evaluation data name other languages"
    counts = {result.language: result.queries for result in report.languages}
    assert counts == {language: n for language, (_, _, n) in floors.items()}, "the queries measured changed"
    under = [
        f"{language} {measured[language]:.3f} < floor {floor:.3f} (measured {was:.3f})"
        for language, (floor, was, _) in sorted(floors.items())
        if measured[language] < floor - 1e-9
    ]
    assert not under, f"{len(under)} of {len(floors)} languages under their recall@10 floor:\n" + "\n".join(under)
