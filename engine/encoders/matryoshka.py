"""Matryoshka truncation: the first N dimensions of a model trained so that every prefix is an
embedding too (``nllb-clip-*/mrl``), re-normalised. ``index --dim N`` records N in the manifest
(``settings["truncate_dim"]``); whatever encodes for that index (search, bank update, Ray workers)
goes through ``index_encoder``, so every vector of the index is the same prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InvalidSetting
from . import Encoder, Languages, normalize_rows

__all__ = ["TRUNCATE_DIM", "TruncatedEncoder", "index_encoder", "truncate_dims"]

TRUNCATE_DIM = "truncate_dim"  # manifest setting: the dimensions an index keeps of its model's vectors


class TruncatedEncoder(Encoder):
    """An encoder's first ``dim`` dimensions; everything else (name, version, ...) is the inner one's."""

    def __init__(self, inner: Encoder, dim: int) -> None:
        self._inner = inner
        self.name = inner.name
        self.dim = dim
        self.version = inner.version
        self.image_batch_size = inner.image_batch_size
        self.preprocess_short_side = inner.preprocess_short_side
        self.accepts_languages = inner.accepts_languages
        self.language_tokens = inner.language_tokens
        self.matryoshka = inner.matryoshka
        self.can_use_gpu = inner.can_use_gpu

    @property
    def text_revision(self) -> str:
        return self._inner.text_revision

    @property
    def full_dim(self) -> int:
        return self._inner.dim

    def encode_images(self, images: list) -> np.ndarray:
        return normalize_rows(self._inner.encode_images(images)[:, : self.dim])

    def encode_texts(self, texts: list[str], languages: Languages = None) -> np.ndarray:
        return normalize_rows(self._inner.encode_texts(texts, languages)[:, : self.dim])

    def text_languages(self, texts: list[str], languages: Languages = None) -> list[str | None]:
        return self._inner.text_languages(texts, languages)

    def query_readings(self, texts: list[str]) -> list[list[str]]:
        return self._inner.query_readings(texts)


def truncate_dims(encoder: Encoder, dim: int | None) -> Encoder:
    """``encoder`` cut to ``dim`` dimensions (None or its own dim: unchanged).

    Refused for models known not to be Matryoshka-trained (their prefixes are not embeddings);
    allowed for those known to be, and for local directories, which say nothing either way.
    """
    if dim is None or dim == encoder.dim:
        return encoder
    if not 1 <= dim < encoder.dim:
        raise InvalidSetting(f"--dim must be between 1 and {encoder.dim} for {encoder.name}, not {dim}")
    if encoder.matryoshka is False:
        raise InvalidSetting(
            f"{encoder.name} is not a Matryoshka model, so its first {dim} dimensions are no embedding; "
            "--dim is for models such as openclip:nllb-clip-base-siglip/mrl"
        )
    return TruncatedEncoder(encoder, dim)


def index_encoder(spec: str, settings: Mapping[str, Any]) -> Encoder:
    """The encoder an index's vectors come from: its model, cut to the manifest's ``truncate_dim``."""
    from . import get_encoder

    dim = settings.get(TRUNCATE_DIM)
    return truncate_dims(get_encoder(spec), int(dim) if dim else None)


def truncated_factory(factory: Any, dim: int, spec: str) -> Encoder:
    """``factory(spec)`` cut to ``dim``: what a Ray worker loads for an index built with --dim."""
    return truncate_dims(factory(spec), dim)
