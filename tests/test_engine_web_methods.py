"""SearchEngine's calls for the web UI: get, search_page, similar, search_image; and query languages."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from babelsearch.engine import ImageNotFound, InvalidQuery, SearchEngine
from babelsearch.engine.language import detect_language, given_language

from .conftest import COLOURS


@pytest.fixture(scope="module")
def engine(colour_index: Path) -> SearchEngine:
    return SearchEngine.open(colour_index, model="test-colours")


def test_get_returns_the_catalog_row_or_none(engine):
    row = engine.get(7)
    assert row["id"] == 7 and Path(row["path"]).is_file() and row["width"] >= 64
    assert engine.get(999) is None and engine.get(-1) is None and engine.get(2**70) is None


def test_search_page_is_a_slice_of_one_ranking(engine):
    whole = engine.search("green", k=12)
    assert [h.id for h in engine.search_page("green", k=4, offset=3)] == [h.id for h in whole[3:7]]
    assert engine.search_page("green", k=4, offset=11) == whole[11:]
    assert engine.search_page("green", k=4, offset=40) == []
    for offset in (-1, 1.5, True):
        with pytest.raises(InvalidQuery, match="offset"):
            engine.search_page("green", k=4, offset=offset)
    with pytest.raises(InvalidQuery, match="k \\+ offset"):
        engine.search_page("green", k=500, offset=501)


def test_similar_leaves_the_image_out(engine):
    red = engine.search("red", k=1)[0]
    hits = engine.similar(red.id, k=3)
    assert len(hits) == 3 and red.id not in [h.id for h in hits]
    assert [Path(h.path).name[:3] for h in hits[:2]] == ["red", "red"]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    for missing in (999, -5, 2**70):
        with pytest.raises(ImageNotFound, match="no image with id"):
            engine.similar(missing, k=3)
    with pytest.raises(InvalidQuery):
        engine.similar(red.id, k=0)


def test_search_image_finds_the_same_colour(engine):
    query = Image.new("RGBA", (20, 10), (*COLOURS["green"], 255))
    hits = engine.search_image(query, k=3)
    assert [Path(h.path).name[:5] for h in hits] == ["green"] * 3


@pytest.mark.parametrize(
    "text, code, source",
    [
        ("ein Hund im Schnee", "de", "model"),
        ("un perro en la nieve", "es", "model"),
        ("собака на снегу", "ru", "model"),
        ("قطة على الأريكة", "ar", "model"),
        ("חתול", "he", "model"),
        ("고양이", "ko", "model"),
        ("猫", "zh", "script"),  # one character: the model is unsure, the script is not
        ("12345", "und", "none"),
        ("  ", "und", "none"),
    ],
)
def test_query_language(text, code, source):
    language = detect_language(text)
    assert (language.code, language.source) == (code, source)
    assert 0.0 <= language.confidence <= 1.0


def test_given_language_codes():
    assert given_language("pt-BR").name == "Portuguese" and given_language("pt-BR").source == "given"
    assert given_language("xyz").name == "xyz"
    for bad in ("", "d", "de de", "<b>", "deutsch-sprache-lang"):
        with pytest.raises(InvalidQuery, match="lang"):
            given_language(bad)
