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
    assert babel_lite.name == "babel-lite" and babel_lite.dim == 384
    texts = babel_lite.encode_texts(["Katze", "猫", "кошка", "rocket"])
    assert texts.shape == (4, 384) and texts.dtype == np.float32
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    # the same concept in three scripts sits closer together than to an unrelated concept
    assert texts[0] @ texts[1] > texts[0] @ texts[3]
    assert texts[2] @ texts[1] > texts[2] @ texts[3]
    images = babel_lite.encode_images([Image.new("RGB", (300, 200), (200, 30, 30)), Image.new("L", (50, 80))])
    assert images.shape == (2, 384) and images.dtype == np.float32
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert babel_lite.encode_texts([]).shape == (0, 384)
    assert babel_lite.encode_images([]).shape == (0, 384)
