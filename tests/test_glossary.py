"""English glosses for Chinese-character queries (CC-CEDICT) and how babel-lite blends them in."""

import numpy as np
import pytest

from babelsearch.engine import glossary
from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder

SAMPLE_LINES = [
    "# CC-CEDICT header line",
    "金魚 金鱼 [jin1 yu2] /goldfish/",
    "貓 猫 [mao1] /cat/CL:隻|只[zhi1]/(dialect) to hide oneself/",
    "傳統 传统 [chuan2 tong3] /tradition; traditional/variant of 傳統|传统/",
    "寺院 寺院 [si4 yuan4] /cloister/temple/",
    "雪地 雪地 [xue3 di4] /snowfield/",
    "鳥 鸟 [diao3] /variant of 屌[diao3]/penis/",
    "鳥 鸟 [niao3] /bird/CL:隻|只[zhi1]/(dialect) to pay attention to/",
    "在 在 [zai4] /to exist/in; at/",
    "一 一 [yi1] /one/single/",
    "隻 只 [zhi1] /classifier for birds and certain animals/",
    "只 只 [zhi3] /only; merely/",
    "not a dictionary line at all",
]


@pytest.fixture
def words():
    return glossary.parse_cedict(SAMPLE_LINES)


def test_parse_keeps_both_scripts_and_drops_what_is_not_a_meaning(words):
    assert words["金魚"] == words["金鱼"] == ("goldfish",)
    assert words["貓"] == words["猫"] == ("cat", "to hide oneself")  # measure word and "(dialect)" gone
    assert words["传统"] == ("tradition", "traditional")  # split at ";", cross-reference gone
    # a secondary reading (opens with a cross-reference) comes after the main one; marked senses last
    assert words["鳥"] == words["鸟"] == ("bird", "to pay attention to", "penis")
    assert "not" not in words and "#" not in words


def test_split_words_takes_the_longest_known_words_and_gives_up_on_unknown_characters(words):
    assert glossary.split_words("一只猫在雪地", words) == ["一", "只", "猫", "在", "雪地"]
    assert glossary.split_words("金魚缸", words) == []  # 缸 is in no headword here


def test_glosses_of_words_phrases_and_other_scripts(monkeypatch, words):
    monkeypatch.setattr(glossary, "dictionary", lambda: words)
    assert glossary.glosses("金魚") == ["goldfish"]
    assert glossary.glosses("猫") == ["cat", "to hide oneself"]
    # a phrase: one reading, its content words in order (particles, numerals, measure words dropped)
    assert glossary.glosses("一只猫在雪地") == ["cat snowfield"]
    # runs split by kana are looked up separately
    assert glossary.glosses("金魚の寺院") == ["goldfish cloister"]
    assert glossary.glosses("在") == ["to exist", "in"]  # a function word alone is still read
    for text in ("goldfish", "ракета", "キンギョ", "", "金魚缸"):
        assert glossary.glosses(text) == []
    assert glossary.has_han("金魚の写真") and not glossary.has_han("キンギョ goldfish")


def test_real_dictionary_reads_traditional_simplified_and_kanji():
    assert glossary.glosses("金魚") == glossary.glosses("金鱼") == ["goldfish"]
    assert glossary.glosses("火箭")[0] == "rocket"
    assert glossary.glosses("咖啡")[0] == "coffee"
    assert glossary.glosses("一只猫在雪地里")[0].startswith("cat snow")


def test_dictionary_is_cached_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BABELSEARCH_CACHE", str(tmp_path))
    glossary.dictionary.cache_clear()
    try:
        first = glossary.dictionary()
        files = list(tmp_path.glob("cedict-glosses-*.marshal"))
        assert len(files) == 1 and first["金魚"] == ("goldfish",)
        glossary.dictionary.cache_clear()
        assert glossary.dictionary() == first  # read back from the cache file
        files[0].write_bytes(b"damaged")
        glossary.dictionary.cache_clear()
        assert glossary.dictionary()["猫"][0] == "cat"  # a damaged cache is parsed again
    finally:
        glossary.dictionary.cache_clear()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def test_babel_lite_moves_han_queries_towards_their_gloss_and_leaves_others_alone(babel_lite):
    plain = BabelLiteEncoder(gloss_weight=0.0)
    plain.__dict__["_text_model"] = babel_lite._text_model  # share the loaded towers and model file
    plain.__dict__["space"] = babel_lite.space
    texts = ["金魚", "猫", "goldfish", "Katze", "キンギョ"]
    glossed, unglossed = babel_lite.encode_texts(texts), plain.encode_texts(texts)
    english = babel_lite.encode_texts(["goldfish", "cat"])
    assert np.allclose(np.linalg.norm(glossed, axis=1), 1.0, atol=1e-5)
    # Han-character queries come much closer to their English meaning ...
    assert cosine(glossed[0], english[0]) > cosine(unglossed[0], english[0]) + 0.1
    assert cosine(glossed[1], english[1]) > cosine(unglossed[1], english[1]) + 0.05
    # ... and every other query is exactly what it was
    np.testing.assert_array_equal(glossed[2:], unglossed[2:])
