"""The text-vector cache behind the query bank and ``babelsearch eval --cache`` (``engine.bank``).

What it promises: every text gets its own vector, in order, however the texts are batched; a cache
file that holds the vectors is read instead of encoding again; one that does not fit (other texts,
another count) or is damaged is never returned, but recomputed and rewritten; and the cache key
changes when the model's vectors change under the same name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from babelsearch.engine.bank import bank_key, embed_texts_cached, vectors_key

from .conftest import COLOURS, ColourEncoder

NAMES = list(COLOURS) + ["grey"]


class CountingEncoder(ColourEncoder):
    """The colour model, recording the size of every batch it is asked to encode."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        self.batches.append(len(texts))
        return super().encode_texts(texts)


def texts(n: int) -> list[str]:
    return [NAMES[i % len(NAMES)] for i in range(n)]


def one_by_one(encoder: ColourEncoder, items: list[str]) -> np.ndarray:
    return np.concatenate([ColourEncoder.encode_texts(encoder, [t]) for t in items])


@pytest.mark.parametrize("n,batch_size", [(7, 3), (9, 3), (600, 256), (1, 256)])
def test_every_text_gets_its_own_vector_in_order_however_batched(tmp_path: Path, n: int, batch_size: int):
    encoder = CountingEncoder()
    items = texts(n)
    vectors = embed_texts_cached(encoder, items, tmp_path / "cache.npy", batch_size=batch_size)
    assert vectors.shape == (n, encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, one_by_one(encoder, items), rtol=1e-6)
    # batched as asked: no call larger than batch_size, every text encoded exactly once
    assert max(encoder.batches) <= batch_size and sum(encoder.batches) == n


def test_no_texts_give_an_empty_matrix(tmp_path: Path):
    encoder = CountingEncoder()
    vectors = embed_texts_cached(encoder, [], tmp_path / "cache.npy")
    assert vectors.shape == (0, encoder.dim) and encoder.batches == []


def test_a_fitting_cache_file_is_read_instead_of_encoding_again(tmp_path: Path):
    path = tmp_path / "cache.npy"
    first = embed_texts_cached(CountingEncoder(), texts(10), path)
    assert path.is_file()
    again = CountingEncoder()
    second = embed_texts_cached(again, texts(10), path)
    assert again.batches == []  # nothing encoded: the file was used
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("cached_rows", [4, 5, 6, 12])
def test_a_cache_file_of_another_shape_is_recomputed_and_replaced(tmp_path: Path, cached_rows: int):
    # a file of the same dimension but a different row count: vectors of other texts, never to be returned
    path = tmp_path / "cache.npy"
    np.save(path, np.full((cached_rows, ColourEncoder.dim), 7.0, np.float32))
    encoder = CountingEncoder()
    items = texts(5)
    vectors = embed_texts_cached(encoder, items, path)
    if cached_rows == 5:  # same shape: taken as the cache it claims to be
        assert encoder.batches == [] and (vectors == 7.0).all()
        return
    assert vectors.shape == (5, encoder.dim) and sum(encoder.batches) == 5
    np.testing.assert_allclose(vectors, one_by_one(encoder, items), rtol=1e-6)
    np.testing.assert_array_equal(np.load(path), vectors)  # the stale file was replaced


def test_a_cache_file_of_another_dimension_is_not_used(tmp_path: Path):
    path = tmp_path / "cache.npy"
    np.save(path, np.ones((5, ColourEncoder.dim + 1), np.float32))
    vectors = embed_texts_cached(CountingEncoder(), texts(5), path)
    assert vectors.shape == (5, ColourEncoder.dim)


# An empty file (a write cut short) makes np.load raise EOFError: recomputed like any damaged cache
EMPTY = b""


@pytest.mark.parametrize("content", [EMPTY, b"not a numpy file at all", b"\x93NUMPY\x01\x00garbage"])
def test_a_damaged_cache_file_is_recomputed_not_an_error(tmp_path: Path, content: bytes):
    path = tmp_path / "cache.npy"
    path.write_bytes(content)
    encoder = CountingEncoder()
    vectors = embed_texts_cached(encoder, texts(6), path)
    np.testing.assert_allclose(vectors, one_by_one(encoder, texts(6)), rtol=1e-6)
    np.testing.assert_array_equal(np.load(path), vectors)


class ShiftedColours(ColourEncoder):
    """The same model name, but different vectors (a changed model that kept its name)."""

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        return np.roll(super().encode_texts(texts), 1, axis=1)


def test_the_cache_key_follows_texts_and_what_the_model_makes_of_them():
    items = texts(5)
    same_model = ColourEncoder()
    assert vectors_key(same_model, items) == vectors_key(ColourEncoder(), items)  # stable across instances
    assert vectors_key(same_model, items) != vectors_key(same_model, texts(6))
    assert vectors_key(same_model, items) != vectors_key(same_model, list(reversed(items)))
    assert vectors_key(same_model, items) != vectors_key(ShiftedColours(), items)


def test_an_index_keeps_its_bank_vectors_default_part_then_user_part(colour_folder: Path, tmp_path: Path):
    from babelsearch.engine import bank
    from babelsearch.indexer import build_index
    from babelsearch.indexer.bank_terms import default_bank_texts

    if not hasattr(bank, "bank_vectors"):  # added beside this test, by another change under way
        pytest.skip("engine.bank.bank_vectors is not in this tree")
    user = tmp_path / "mine.txt"
    user.write_text("red\nblue\n", "utf-8")
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours", query_bank=[user])
    stored = bank.bank_vectors(index_dir)
    default = default_bank_texts()
    assert stored is not None and stored.shape == (len(default) + 2, ColourEncoder.dim)
    np.testing.assert_allclose(stored[-2:], ColourEncoder().encode_texts(["red", "blue"]), rtol=1e-6)
    np.testing.assert_allclose(stored[:3], ColourEncoder().encode_texts(default[:3]), rtol=1e-6)
    # a damaged part: none at all rather than half a bank (the index itself is fine)
    next((index_dir / bank.BANK_DIR).glob("user-*.npy")).write_bytes(b"not a numpy file")
    assert bank.bank_vectors(index_dir) is None
    assert bank.bank_vectors(tmp_path / "no-index-here") is None


def test_the_keys_are_an_on_disk_format_and_stay_as_they_were():
    # bank_key is recorded in every index's manifest (query_bank.sha256) and names its bank/ files;
    # vectors_key names cache files. A changed key makes `bank update` recompute every image's terms
    # and throws away every cache, so a change must be deliberate: these are the values as shipped.
    assert bank_key("babel-lite", ["a photo of a dog", "猫"]) == "6025fb4f465e2dd8"
    assert vectors_key(ColourEncoder(), ["red", "blue"]) == "782d56c984874c20"


def test_stored_bank_vectors_are_never_unpickled(colour_folder: Path, tmp_path: Path):
    from babelsearch.engine import bank
    from babelsearch.indexer import build_index

    if not hasattr(bank, "bank_vectors"):
        pytest.skip("engine.bank.bank_vectors is not in this tree")
    index_dir = tmp_path / "index"
    build_index([colour_folder], index_dir, model="test-colours")
    part = next((index_dir / bank.BANK_DIR).glob("default-*.npy"))
    # an object array (a pickle inside the .npy): loading it could run code, so it is refused
    np.save(part, np.array([[0.5] * ColourEncoder.dim], dtype=object), allow_pickle=True)
    assert bank.bank_vectors(index_dir) is None
