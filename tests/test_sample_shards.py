"""The shared 1000-photo sample built with --shard-size 300 answers exactly like an unsharded build."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from babelsearch.cli import cli
from babelsearch.engine import SearchEngine
from babelsearch.engine.layout import read_manifest

from .conftest import BABEL_IMAGENET, SHARED_SAMPLE, require_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sharded_sample_index(tmp_path_factory) -> Path:
    require_path(SHARED_SAMPLE / "labels.tsv", "../shared/data/imagenet-sample")
    index_dir = tmp_path_factory.mktemp("sample-sharded") / "index"
    result = CliRunner().invoke(
        cli, ["index", str(SHARED_SAMPLE / "images"), "--index", str(index_dir), "--shard-size", "300", "-q"]
    )
    assert result.exit_code == 0, result.output
    return index_dir


def test_shard_size_300_gives_the_unsharded_top_10(sharded_sample_index: Path, shared_sample_index: Path):
    assert [s.count for s in read_manifest(sharded_sample_index).shards] == [300, 300, 300, 100]
    assert len(read_manifest(shared_sample_index).shards) == 1
    names = json.loads(BABEL_IMAGENET.read_text())
    queries = list(names["EN"][1][:100]) + list(names["DE"][1][:50]) + list(names["JA"][1][:50])
    sharded = SearchEngine.open(sharded_sample_index).search_many(queries, k=10)
    single = SearchEngine.open(shared_sample_index).search_many(queries, k=10)
    for query, a, b in zip(queries, sharded, single):
        assert [h.path for h in a] == [h.path for h in b], query
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-6)
