"""The eval command on a tiny generated set: colour names as class names in two "languages"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from babelsearch.cli import cli
from babelsearch.engine import SearchEngine
from babelsearch.evaluation import EvaluationError, evaluate, load_eval_set
from babelsearch.indexer import build_index

CLASSES = ["red", "green", "blue", "yellow"]
# The colour model knows English colour names only; every "DE" name encodes to the same grey query,
# so all four DE queries get one and the same ranking: exactly one of them can be right at rank 1.
LABELS = {"EN": [[0, 1, 2, 3], CLASSES], "DE": [[0, 1, 2, 3], ["rot", "grün", "blau", "gelb"]]}
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def eval_files(colour_folder: Path, tmp_path: Path) -> dict[str, Path]:
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(LABELS, ensure_ascii=False), "utf-8")
    images = sorted(p for p in colour_folder.rglob("*") if p.is_file())
    # headerless path<TAB>class_idx, paths relative to the truth file's folder
    truth = tmp_path / "truth.tsv"
    truth.write_text("".join(f"{p.relative_to(tmp_path)}\t{CLASSES.index(p.stem[:-1])}\n" for p in images), "utf-8")
    return {"index": index_dir, "labels": labels, "truth": truth, "images": images, "root": tmp_path}


def test_recall_per_language_and_means(eval_files):
    eval_set = load_eval_set(eval_files["truth"], eval_files["labels"])
    assert eval_set.kind == "class" and eval_set.truth_images == 8
    report = evaluate(SearchEngine.open(eval_files["index"]), eval_set, ks=[1, 5, 10], modes=["margin", "none"])
    by_lang = {r.language: r for r in report.languages}
    assert by_lang["EN"].queries == by_lang["DE"].queries == 4
    for mode in ("margin", "none"):
        assert by_lang["EN"].recall[mode] == {1: 1.0, 5: 1.0, 10: 1.0}
        assert by_lang["DE"].recall[mode][1] == 0.25 and by_lang["DE"].recall[mode][10] == 1.0
        assert report.mean(mode, 1) == pytest.approx(0.625)
        assert report.mean(mode, 1, non_english=True) == pytest.approx(0.25)
    table = report.markdown()
    assert "| DE | 4 | 25.0 |" in table and "mean, non-English (1)" in table and "Δ R@10 margin−none" in table


def test_languages_filter_and_other_truth_layouts(eval_files):
    root, images = eval_files["root"], eval_files["images"]
    # a labels.tsv-style table with named columns and absolute paths
    table = root / "labels.tsv"
    table.write_text(
        "file\twnid\tclass_idx\tenglish_name\n"
        + "".join(f"{p}\tw\t{CLASSES.index(p.stem[:-1])}\t{p.stem[:-1]}\n" for p in images),
        "utf-8",
    )
    eval_set = load_eval_set(table, eval_files["labels"], languages=["de"])
    assert list(eval_set.queries) == ["DE"] and len(eval_set.queries["DE"]) == 4
    # caption truth: a query, its language and several relevant paths per row
    captions = root / "captions.tsv"
    blue = [p for p in images if p.stem.startswith("blue")]
    red = [p for p in images if p.stem.startswith("red")]
    captions.write_text(
        "language\tquery\tpath\n"
        f"en\tblue\t{blue[0]}\t{blue[1]}\n"
        f"en\tred\t{red[0]}\n"
        f"en\tred\t{red[1]}\n"
        f"xx\tsomething grey\t{red[0]}\n",
        "utf-8",
    )
    eval_set = load_eval_set(captions)
    assert eval_set.kind == "caption" and eval_set.truth_images == 4
    assert dict(eval_set.queries["en"])["red"] == {str(red[0]), str(red[1])}
    report = evaluate(SearchEngine.open(eval_files["index"]), eval_set, ks=[1], modes=["none", "csls"])
    assert {r.language: r.recall["none"][1] for r in report.languages}["en"] == 1.0


def test_bad_input_is_refused_clearly(eval_files, tmp_path: Path):
    with pytest.raises(EvaluationError, match="has no language FR"):
        load_eval_set(eval_files["truth"], eval_files["labels"], languages=["FR"])
    with pytest.raises(EvaluationError, match="--labels"):
        load_eval_set(eval_files["truth"])
    elsewhere = tmp_path / "elsewhere.tsv"
    elsewhere.write_text("/nowhere/a.jpg\t0\n", "utf-8")
    with pytest.raises(EvaluationError, match="none of the 1 images"):
        evaluate(SearchEngine.open(eval_files["index"]), load_eval_set(elsewhere, eval_files["labels"]))
    with pytest.raises(EvaluationError, match="rerank modes must be among"):
        evaluate(
            SearchEngine.open(eval_files["index"]),
            load_eval_set(eval_files["truth"], eval_files["labels"]),
            modes=["fancy"],
        )


def test_eval_command_writes_table_chart_and_json(eval_files, tmp_path: Path):
    out = tmp_path / "report"
    args = [
        "eval",
        eval_files["index"],
        "--labels",
        eval_files["labels"],
        "--truth",
        eval_files["truth"],
        "--k",
        "1,5",
        "--rerank",
        "margin,distance,none",
        "--out",
        out,
        "--json",
        "-q",
    ]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["modes"] == ["margin", "distance", "none"] and payload["ks"] == [1, 5]
    assert payload["means"]["non_english"]["none"]["recall@1"] == 0.25
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "eval.md", "recall_at_5.png"]
    assert (out / "recall_at_5.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| EN | 4 |" in (out / "eval.md").read_text("utf-8")

    result = CliRunner().invoke(cli, [str(a) for a in args[:6]] + ["--languages", "xx"])
    assert result.exit_code == 1 and "has no language xx" in result.output and "Traceback" not in result.output


def test_the_query_layer_does_not_import_the_evaluation_tool():
    # the tool sits beside the query path: it reads an index through SearchEngine, never the reverse
    importing = re.compile(r"^\s*(from|import)\s+[\w.]*evaluation\b", re.M)
    offenders = [
        str(p.relative_to(ROOT)) for p in (ROOT / "engine").rglob("*.py") if importing.search(p.read_text("utf-8"))
    ]
    assert not offenders and not (ROOT / "engine" / "evaluation.py").exists(), offenders
