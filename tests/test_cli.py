import json
from pathlib import Path

from click.testing import CliRunner

from babelsearch.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_index_search_info_round_trip(colour_folder: Path, tmp_path: Path):
    index_dir = tmp_path / "index"
    (colour_folder / "broken.jpg").write_bytes(b"junk")
    result = run("index", colour_folder, "--index", index_dir, "--model", "test-colours", "-q")
    assert result.exit_code == 0, result.output
    assert "indexed 8, unchanged 0, skipped 1" in result.output
    assert "broken.jpg" in result.output and "images/s" in result.output

    result = run("search", index_dir, "blue", "--k", "3")
    # three hits, one line each (the weaker-matches line is for terminals only)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 0 and len(lines) == 3
    rank, score, path = lines[0].split(maxsplit=2)
    assert rank == "1" and float(score) > 0 and Path(path).name.startswith("blue")

    result = run("search", index_dir, "yellow", "--json", "-k", "2")
    payload = json.loads(result.output)
    assert set(payload) == {"query", "k", "took_ms", "language", "readings", "filters", "results"}
    assert payload["query"] == "yellow" and payload["k"] == 2 and payload["took_ms"] >= 0
    assert payload["readings"] == [] and payload["filters"] is None
    assert [set(r) for r in payload["results"]] == [{"id", "path", "score", "cosine", "relevant", "similar"}] * 2
    assert 0 < payload["results"][0]["cosine"] <= 1

    result = run("info", index_dir)
    assert result.exit_code == 0 and "test-colours" in result.output and "images: 8" in result.output
    assert "rerank: distance, margin_k all" in result.output and "query bank: " in result.output
    assert json.loads(run("info", index_dir, "--json").output)["catalog_images"] == 8


def test_errors_are_one_clear_line_without_traceback(colour_folder: Path, tmp_path: Path):
    cases = [
        (["search", tmp_path / "absent", "cat"], "no index at"),
        (["info", colour_folder], "manifest.json is missing"),
        (["index", tmp_path / "nope", "--index", tmp_path / "i"], "does not exist"),
        (["index", colour_folder, "--index", tmp_path / "i", "--model", "bogus"], "unknown model 'bogus'"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1

    index_dir = tmp_path / "index"
    run("index", colour_folder, "--index", index_dir, "--model", "test-colours", "-q")
    result = CliRunner().invoke(cli, ["search", str(index_dir), "  "])
    assert result.exit_code == 1 and "the query is empty" in result.output
    result = CliRunner().invoke(cli, ["search", str(index_dir), "red", "--k", "0"])
    assert result.exit_code == 2 and "Invalid value for '--k'" in result.output
    result = CliRunner().invoke(cli, ["index", str(colour_folder), "--index", str(index_dir), "--model", "babel-lite"])
    assert result.exit_code == 1 and "built with model 'test-colours'" in result.output


def test_a_terminal_sees_where_the_likely_relevant_hits_end(colour_folder: Path, tmp_path: Path, monkeypatch):
    import babelsearch.cli.searching as searching

    run("index", colour_folder, "--index", tmp_path / "index", "--model", "test-colours", "-q")
    piped = run("search", tmp_path / "index", "blue", "--k", "8").output.splitlines()
    monkeypatch.setattr(searching, "_is_terminal", lambda: True)
    shown = run("search", tmp_path / "index", "blue", "--k", "8").output.splitlines()
    divider = [i for i, line in enumerate(shown) if line.strip() == "-- weaker matches --"]
    assert len(piped) == 8 and len(divider) == 1 and [line for line in shown if "--" not in line] == piped
    # above the line the hits the index's calibration flags, below it the rest
    from babelsearch.engine import SearchEngine

    hits = SearchEngine.open(tmp_path / "index").search("blue", k=8)
    assert divider[0] == sum(bool(hit.relevant) for hit in hits) and hits[divider[0]].relevant is False
