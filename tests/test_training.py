"""babel-lite's training recipe (``babelsearch.training``): the caption set, the split, the heads'
determinism, and a tiny end-to-end run on a few photos of ../shared's caption set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from babelsearch.training import HeadSettings, TrainingDataError, hold_out, read_caption_set, train_heads
from babelsearch.training.data import without_languages

from .conftest import require_module, require_path, write_image

CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "captions"


def write_caption_set(root: Path) -> Path:
    rows = ["file\tsplit\tlang\tsource\tcaption"]
    for i in range(6):
        write_image(root / "images" / f"p{i}.jpg", (40 * i, 100, 200 - 30 * i), size=(240, 240), noise_seed=i)
        split = "test" if i == 5 else "train"
        source = "cc3m" if i % 2 else "flickr8k"
        rows.append(f"p{i}.jpg\t{split}\ten\t{source}\ta photo number {i}")
        rows.append(f"p{i}.jpg\t{split}\tde\t{'cc3m' if i % 2 else 'm30k-t1'}\tein Foto Nummer {i}")
    (root / "captions.tsv").write_text("\n".join(rows) + "\n", "utf-8")
    return root


def test_only_the_train_split_is_read(tmp_path: Path):
    captions = read_caption_set(write_caption_set(tmp_path))
    assert captions.files == [f"p{i}.jpg" for i in range(5)]  # p5 is test: never trained on
    assert captions.captions[0] == {"en": ["a photo number 0"], "de": ["ein Foto Nummer 0"]}
    assert captions.sources[:2] == ["flickr8k", "cc3m"] and captions.caption_count == 10
    assert read_caption_set(tmp_path, "test").files == ["p5.jpg"]


def test_a_folder_that_is_not_a_caption_set_is_refused_in_one_line(tmp_path: Path):
    with pytest.raises(TrainingDataError, match="captions.tsv not found"):
        read_caption_set(tmp_path)
    (tmp_path / "captions.tsv").write_text("path\tcaption\nx.jpg\thello\n", "utf-8")
    with pytest.raises(TrainingDataError, match="expected the columns file, split, lang, source, caption"):
        read_caption_set(tmp_path)


def test_held_out_photos_are_the_same_every_time_and_apart_from_training(tmp_path: Path):
    captions = read_caption_set(write_caption_set(tmp_path))
    training, validation = hold_out(captions, 1)
    again = hold_out(captions, 1)[1]
    assert validation.files == again.files and len(validation.files) == 2  # one per source
    assert sorted(set(validation.sources)) == ["cc3m", "flickr8k"]
    assert not set(training.files) & set(validation.files)
    assert sorted(training.files + validation.files) == captions.files


def test_a_language_can_be_left_out_of_training(tmp_path: Path):
    captions = read_caption_set(write_caption_set(tmp_path))
    german_only = without_languages(captions, {"en"})
    assert german_only.files == captions.files and all(set(c) == {"de"} for c in german_only.captions)
    assert without_languages(captions, {"en", "de"}).files == []  # a photo with no caption left is dropped


def synthetic_pairs(seed=0, photos=96, features=40):
    """Photos whose features and captions share a hidden topic, so a head can learn something."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((photos, 16)).astype(np.float32)
    images = topics @ rng.standard_normal((16, features)).astype(np.float32)
    texts = topics @ rng.standard_normal((16, 384)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    captions = {i: {"en": [i]} for i in range(photos)}
    return images, texts, captions


def test_training_is_deterministic_and_learns_the_pairing():
    require_module("torch")
    images, texts, captions = synthetic_pairs()
    settings = HeadSettings(hidden=32, text_hidden=24, dim=16, epochs=30, batch=32, threads=1)
    first = train_heads(images, images, texts, captions, settings)
    second = train_heads(images, images, texts, captions, settings)
    for a, b in zip(first[:2], second[:2]):
        for name in ("w1", "b1", "w2", "b2", "ws", "bs"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    image_head, text_head, summary = first
    scores = text_head(texts) @ image_head(images).T
    top1 = float(np.mean(np.argmax(scores, axis=1) == np.arange(len(texts))))
    assert top1 > 0.5, top1  # chance is 1/96
    assert summary["seconds"] >= 0 and summary["loss"] > 0
    other = train_heads(
        images,
        images,
        texts,
        captions,
        HeadSettings(hidden=32, text_hidden=24, dim=16, epochs=30, batch=32, threads=1, seed=1),
    )
    assert not np.array_equal(other[0].w1, image_head.w1)  # the seed is what differs


@pytest.mark.slow
def test_a_tiny_run_writes_a_model_file_the_encoder_loads(tmp_path: Path):
    """The whole recipe on 40 photos of the shared caption set, 2 epochs: every stage runs, the file
    loads into babel-lite, and its vectors have the shipped file's shape."""
    require_module("torch")
    require_path(CAPTIONS / "captions.tsv", "../shared/data/captions")
    from babelsearch.engine.encoders.babel_lite import BabelLiteEncoder
    from babelsearch.training.__main__ import main

    out = tmp_path / "model.npz"
    code = main(
        [str(CAPTIONS), "--out", str(out), "--work", str(tmp_path / "work"), "--max-photos", "40", "--epochs", "2"]
    )
    assert code == 0 and out.exists()
    encoder = BabelLiteEncoder(model_file=str(out))
    assert encoder.space.meta["photos"] == 40 and encoder.space.meta["recipe"]["epochs"] == 2
    from PIL import Image

    images = [Image.open(CAPTIONS / "images" / name) for name in sorted((CAPTIONS / "images").iterdir())[:3]]
    vectors = encoder.encode_images(images)
    texts = encoder.encode_texts(["Kinder spielen am Strand", "猫"])
    assert vectors.shape == (3, 576) and texts.shape == (2, 576)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    # the cache makes a second run skip the towers: same inputs, same file
    again = tmp_path / "again.npz"
    assert (
        main(
            [
                str(CAPTIONS),
                "--out",
                str(again),
                "--work",
                str(tmp_path / "work"),
                "--max-photos",
                "40",
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    with np.load(out) as a, np.load(again) as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
