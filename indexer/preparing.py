"""Making a model's derived files ahead of use (``babelsearch prepare``, run by ``make install``).

What a model derives on its first use (babel-lite: the ONNX export of its image tower, the parsed
CC-CEDICT dictionary; every model: the vectors of the shipped query bank) is made here instead, so a
fresh install's first index run and first search cost what the second ones cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from PIL import Image

from babelsearch.engine.encoders import get_encoder

from .bank_terms import default_bank_texts, default_bank_vectors


def prepare_model(spec: str) -> Iterator[str]:
    """Load ``spec``, run both towers once, and embed the shipped bank; one line per step, as it goes."""
    started = time.perf_counter()
    encoder = get_encoder(spec)
    encoder.encode_images([Image.new("RGB", (256, 256), (128, 128, 128))])
    yield f"image tower: {time.perf_counter() - started:.1f} s"
    started = time.perf_counter()
    encoder.encode_texts(["a photo of a cat", "猫"])  # the text tower and, for babel-lite, the dictionary
    yield f"text tower: {time.perf_counter() - started:.1f} s"
    started = time.perf_counter()
    texts = default_bank_texts()
    default_bank_vectors(encoder, texts)
    yield f"query bank: {len(texts)} texts, {time.perf_counter() - started:.1f} s"
