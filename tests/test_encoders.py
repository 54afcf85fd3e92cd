import numpy as np
import pytest
from PIL import Image

from babelsearch.engine import Encoder, UnknownModel, get_encoder
from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder, load_class_lemmas, normalize_query_text


def test_unknown_model_spec_names_the_available_ones():
    with pytest.raises(UnknownModel, match="babel-lite"):
        get_encoder("no-such-model")


def test_registry_returns_one_cached_encoder_per_spec():
    assert get_encoder("test-colours") is get_encoder("test-colours")
    assert isinstance(get_encoder("test-colours"), Encoder)


def test_query_length_counts_characters_wide_ones_three_times():
    from babelsearch.engine.encoders.babel_lite import query_length

    assert query_length("katze") == 5 and query_length("two dogs") == 7
    assert query_length("金鱼") == 6 and query_length("고양이") == 6 and query_length("コンピューター") == 7
    assert query_length("ปลาทอง") == 6 and query_length("बिल्ली") == 3  # vowel signs are not counted


def test_query_text_normalisation():
    assert normalize_query_text("  ｃａｔ \t in\nsnow ") == "cat in snow"


def test_class_lemmas_cover_imagenet_in_order():
    lemmas = load_class_lemmas()
    assert len(lemmas) == 1000
    assert lemmas[1][0] == "goldfish"
    assert lemmas[999][0] == "toilet tissue"


def test_preprocess_matches_recipe():
    image = Image.new("RGB", (512, 300), (127, 255, 0))
    pixels = BabelLiteEncoder.preprocess(image)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    assert np.allclose(pixels[0], 0.0) and np.allclose(pixels[1], 1.0) and np.allclose(pixels[2], -127 / 128)


def test_babel_lite_outputs_are_normalised_and_cross_lingual(babel_lite):
    assert babel_lite.name == "babel-lite" and babel_lite.dim == 576 and babel_lite.version == "3"
    texts = babel_lite.encode_texts(["Katze", "猫", "кошка", "rocket"])
    assert texts.shape == (4, 576) and texts.dtype == np.float32
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    # the same concept in three scripts sits closer together than to an unrelated concept
    assert texts[0] @ texts[1] > texts[0] @ texts[3]
    assert texts[2] @ texts[1] > texts[2] @ texts[3]
    images = babel_lite.encode_images([Image.new("RGB", (300, 200), (200, 30, 30)), Image.new("L", (50, 80))])
    assert images.shape == (2, 576) and images.dtype == np.float32
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert babel_lite.encode_texts([]).shape == (0, 576)
    assert babel_lite.encode_images([]).shape == (0, 576)


def test_babel_lite_reads_a_name_by_its_concepts_and_a_sentence_by_its_captions(babel_lite):
    """A short name is read by the concept part alone (as babel-lite 2 read it), a sentence mostly by the
    caption part; two sentences about one scene in two languages land close together."""
    space = babel_lite.space
    lengths = babel_lite.query_lengths(["katze", "zwei kinder spielen mit einem ball am strand bei sonnenuntergang"])
    share = space.concept_share(lengths)
    assert share[0] == pytest.approx(space.gate_short) and share[0] == 1.0
    assert share[1] == pytest.approx(space.gate_long)
    beach = babel_lite.encode_texts(
        ["Kinder spielen am Strand", "children playing on the beach", "a red car on a street"]
    )
    assert beach[0] @ beach[1] > beach[0] @ beach[2] + 0.1
