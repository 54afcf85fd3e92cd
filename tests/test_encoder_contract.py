"""One Encoder contract (engine/encoders/base.py) declares every member the engine and the indexer use:
backends subclass it, the registry refuses what does not, and nothing probes an encoder with getattr."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import babelsearch
from babelsearch.engine.encoders import Encoder, get_encoder, register_encoder
from babelsearch.engine.errors import InvalidSetting

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "indexer", "webui", "babelsearch")


def probes_of_encoders(path: Path) -> list[str]:
    """``getattr(x, ...)`` / ``hasattr(x, ...)`` calls whose object is named like an encoder."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            target = ast.unparse(node.args[0]) if node.args else ""
            if "encoder" in target.lower():
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_probes_an_encoder_for_members_it_may_lack():
    sources = [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    assert len(sources) > 50
    assert [probe for path in sources for probe in probes_of_encoders(path)] == []


def test_the_shipped_backends_subclass_the_contract():
    from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder
    from babelsearch.engine.encoders.matryoshka import TruncatedEncoder
    from babelsearch.engine.encoders.openclip import OpenClipEncoder
    from babelsearch.engine.encoders.sentence_transformers import SentenceTransformersEncoder

    for backend in (BabelLiteEncoder, OpenClipEncoder, SentenceTransformersEncoder, TruncatedEncoder):
        assert issubclass(backend, Encoder), backend
    assert babelsearch.Encoder is Encoder


def test_a_model_that_does_not_subclass_the_contract_is_refused_by_name():
    class Loose:
        name, dim = "test-loose", 4

        def encode_images(self, images: list) -> np.ndarray:
            return np.zeros((len(images), 4), np.float32)

    register_encoder("test-loose", lambda spec: Loose())  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidSetting, match=r"'test-loose' is a Loose, which does not subclass babelsearch.Encoder"):
        get_encoder("test-loose")


def test_the_defaults_are_what_a_plain_model_means():
    class Plain(Encoder):
        name, dim = "test-plain", 3

    plain = Plain()
    assert plain.full_dim == 3 and plain.version is None and plain.image_batch_size == 32
    assert plain.preprocess_short_side is None and plain.text_revision == ""
    assert not plain.accepts_languages and not plain.language_tokens and plain.matryoshka is False
    assert not plain.can_use_gpu
    assert plain.text_languages(["a", "b"]) == [None, None]
    assert plain.query_readings(["a", "b"]) == [[], []]
    with pytest.raises(NotImplementedError, match="Plain encodes no images"):
        plain.encode_images([])
    with pytest.raises(NotImplementedError, match="Plain encodes no texts"):
        plain.encode_texts(["a"])


def test_a_matryoshka_cut_keeps_every_member_of_its_model():
    from babelsearch.engine.encoders.matryoshka import truncate_dims

    class Nested(Encoder):
        name, dim, version, matryoshka = "test-nested", 8, "7", True
        preprocess_short_side, image_batch_size, accepts_languages, language_tokens = 300, 5, True, True
        can_use_gpu = True

        @property
        def text_revision(self) -> str:
            return "glossary 2"

        def encode_texts(self, texts: list[str], languages=None) -> np.ndarray:
            return np.tile(np.arange(1, 9, dtype=np.float32), (len(texts), 1))

        def text_languages(self, texts: list[str], languages=None) -> list[str | None]:
            return ["deu_Latn"] * len(texts)

        def query_readings(self, texts: list[str]) -> list[list[str]]:
            return [["red"]] * len(texts)

    cut = truncate_dims(Nested(), 2)
    assert (cut.name, cut.dim, cut.full_dim, cut.version, cut.text_revision) == ("test-nested", 2, 8, "7", "glossary 2")
    assert (cut.preprocess_short_side, cut.image_batch_size, cut.accepts_languages, cut.language_tokens) == (
        300,
        5,
        True,
        True,
    )
    assert cut.can_use_gpu and cut.text_languages(["x"]) == ["deu_Latn"] and cut.query_readings(["x"]) == [["red"]]
    np.testing.assert_allclose(cut.encode_texts(["x"], "de"), [[1 / 5**0.5, 2 / 5**0.5]], rtol=1e-6)
