"""SearchOptions: checked once where made, read from loose values, and the same hits as keywords."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import babelsearch
from babelsearch.engine import InvalidQuery, SearchEngine
from babelsearch.engine.options import MAX_K, SearchOptions

from .conftest import COLOURS


@pytest.fixture(scope="module")
def engine(colour_index: Path) -> SearchEngine:
    return SearchEngine.open(colour_index, model="test-colours")


def ids(hits) -> list[int]:
    return [hit.id for hit in hits]


def test_defaults_leave_everything_to_the_index():
    assert dataclasses.astuple(SearchOptions()) == (
        10,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        False,
    )  # k, rerank, margin_k, nprobe, refine_factor, lang, where, min_score, collapse
    assert babelsearch.SearchOptions is SearchOptions
    from babelsearch.engine.search import MAX_K as search_max_k  # where callers have long imported it

    assert search_max_k == MAX_K == 1000


@pytest.mark.parametrize(
    "values, message",
    [
        ({"k": 0}, "k must be an integer from 1 to 1000, got 0"),
        ({"k": 1001}, "k must be an integer from 1 to 1000, got 1001"),
        ({"k": 2.5}, "k must be an integer from 1 to 1000, got 2.5"),
        ({"k": True}, "k must be an integer from 1 to 1000, got True"),
        ({"k": "5"}, "k must be an integer from 1 to 1000, got '5'"),
        ({"rerank": "fancy"}, "rerank must be one of margin, distance, csls, none, got 'fancy'"),
        ({"margin_k": 17}, "margin_k must be 1 to 16, 32, 64, 128, 256 or 'all', got 17"),
        ({"margin_k": "most"}, "margin_k must be 1 to 16, 32, 64, 128, 256 or 'all', got 'most'"),
        ({"margin_k": True}, "margin_k must be 1 to 16, 32, 64, 128, 256 or 'all', got True"),
        ({"nprobe": 0}, "nprobe must be an integer from 1 to 1048576, got 0"),
        ({"nprobe": 2.5}, "nprobe must be an integer from 1 to 1048576, got 2.5"),
        ({"refine_factor": 0}, "refine_factor must be an integer from 1 to 100, got 0"),
        ({"refine_factor": 101}, "refine_factor must be an integer from 1 to 100, got 101"),
    ],
)
def test_bad_values_are_refused_with_the_engines_messages(values, message):
    with pytest.raises(InvalidQuery) as raised:
        SearchOptions(**values)
    assert str(raised.value) == message


def test_checked_values_are_plain_and_the_object_is_frozen():
    options = SearchOptions(k=np.int64(5), margin_k=np.int32(8), nprobe=np.int16(4), refine_factor=np.uint8(3))
    assert (options.k, options.margin_k, options.nprobe, options.refine_factor) == (5, 8, 4, 3)
    assert all(type(value) is int for value in (options.k, options.margin_k, options.nprobe, options.refine_factor))
    assert SearchOptions(margin_k="all", rerank="csls").margin_k == "all"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.k = 1000  # type: ignore[misc]


def test_loose_values_from_a_request_or_a_form():
    args = {"q": "red", "offset": "5", "k": "7", "rerank": "margin", "margin_k": "32", "nprobe": " 8 ", "lang": ""}
    assert SearchOptions.from_values(args) == SearchOptions(k=7, rerank="margin", margin_k=32, nprobe=8)
    # "" and None are "not given"; keywords win over the mapping
    assert SearchOptions.from_values({"rerank": "", "refine_factor": None}, k=3) == SearchOptions(k=3)
    assert SearchOptions.from_values({"margin_k": "all"}).margin_k == "all"
    assert SearchOptions.from_values() == SearchOptions()
    with pytest.raises(InvalidQuery, match="nprobe must be an integer from 1 to 1048576, got 'abc'"):
        SearchOptions.from_values({"nprobe": "abc"})
    with pytest.raises(InvalidQuery, match="refine_factor must be an integer from 1 to 100, got -2"):
        SearchOptions.from_values({"refine_factor": -2})
    with pytest.raises(TypeError, match="unknown search options: nprobes"):
        SearchOptions.from_values(nprobes=3)


def test_options_and_keywords_give_the_same_hits(engine):
    options = SearchOptions(k=5, rerank="margin", margin_k=4)
    assert ids(engine.search("red", options=options)) == ids(engine.search("red", k=5, rerank="margin", margin_k=4))
    assert ids(engine.search("red", 5, rerank="margin", margin_k=4)) == ids(engine.search("red", options=options))
    many = engine.search_many(["red", "blue"], options=options)
    assert [ids(hits) for hits in many] == [ids(h) for h in engine.search_many(["red", "blue"], k=5, rerank="margin")]
    vectors = engine.encoder.encode_texts(["green"])
    plain = SearchOptions(k=4, rerank="none", refine_factor=2)
    assert ids(engine.search_vectors(vectors, options=plain)[0]) == ids(
        engine.search_vectors(vectors, 4, rerank="none", refine_factor=2)[0]
    )
    page = engine.search_page("green", offset=3, options=SearchOptions(k=4, rerank="none"))
    assert ids(page) == ids(engine.search_page("green", k=4, offset=3, rerank="none"))
    assert ids(page) == ids(engine.search("green", k=7, rerank="none"))[3:]
    assert engine.search_many([], options=options) == []


def test_options_or_keywords_not_both(engine):
    with pytest.raises(TypeError, match="not both"):
        engine.search("red", k=3, options=SearchOptions())
    with pytest.raises(TypeError, match="not both"):
        engine.search_page("red", rerank="none", options=SearchOptions())
    with pytest.raises(TypeError, match="SearchOptions"):
        engine.search("red", options={"k": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nprobes"):
        engine.search("red", nprobes=3)  # type: ignore[call-arg]


def test_image_queries_rank_by_plain_cosine(engine):
    red = engine.search("red", k=1)[0]
    margin = SearchOptions(k=3, rerank="margin", margin_k=2)
    # rerank and margin_k do not apply to image queries: the score is the cosine, with or without them
    similar = engine.similar(red.id, options=margin)
    assert ids(similar) == ids(engine.similar(red.id, k=3)) and red.id not in ids(similar)
    assert all(hit.score == hit.cosine for hit in similar)
    query = Image.new("RGB", (20, 10), COLOURS["blue"])
    found = engine.search_image(query, options=margin)
    assert ids(found) == ids(engine.search_image(query, k=3)) and all(hit.score == hit.cosine for hit in found)
    with pytest.raises(TypeError, match="rerank"):
        engine.similar(red.id, k=3, rerank="margin")  # type: ignore[call-arg]


def test_bad_keywords_are_the_same_errors_as_before(engine):
    for call in (
        lambda: engine.search("red", k=0),
        lambda: engine.similar(1, k=MAX_K + 1),
        lambda: engine.search_image(Image.new("RGB", (4, 4)), k=0),
        lambda: engine.search_vectors(np.ones((1, 3), np.float32), k=2.5),
    ):
        with pytest.raises(InvalidQuery, match="k must be an integer from 1 to 1000"):
            call()
    with pytest.raises(InvalidQuery, match="k \\+ offset must be at most 1000, got 1001"):
        engine.search_page("red", offset=1, options=SearchOptions(k=1000))
