"""The Encoder contract: every member the engine and the indexer use, with its default and meaning.

A backend subclasses ``Encoder``, sets ``name`` and ``dim``, implements ``encode_images`` and
``encode_texts``, and overrides a default only where it differs. Callers read these members directly:
nothing probes an encoder for what it may have, so what is expected of a backend is all here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# a query's language as encode_texts and text_languages take it: one for every text, one per text, or
# None (the model detects or does not care); codes as engine.language gives them ("de", "zh", ...)
Languages = str | Sequence[str | None] | None


class Encoder:
    """Maps images and texts into one vector space: rows L2-normalised, float32, ``dim`` wide."""

    name: str = ""  # the model spec it was made from ("babel-lite", "openclip:..."), kept in the manifest
    dim: int = 0  # width of its vectors (after a Matryoshka cut: the kept dimensions)
    # recorded in a new index's manifest; an index recorded with another version is refused (its vectors
    # would be mis-ranked). None: the model has no versions of its own (its spec names the weights)
    version: str | None = None
    image_batch_size: int = 32  # images per encode_images call the indexer makes, unless told otherwise
    # the shorter side the model's own preprocessing scales an image to: the indexer decodes and scales
    # to it (JPEGs decoded reduced); None: the model says not, and gets big JPEGs at about 1024 pixels
    preprocess_short_side: int | None = None
    # encode_texts uses the languages it is given (multilingual CLIP models); False: ignored (babel-lite)
    accepts_languages: bool = False
    # the model is told a query's language by a token (NLLB-CLIP): worth detecting it for every query
    language_tokens: bool = False
    # every prefix of its vectors is an embedding too (Matryoshka-trained): True, False, or None unknown
    matryoshka: bool | None = False
    # uses a GPU where the machine has one (torch models): a Ray build then gives its workers GPUs;
    # False for babel-lite, whose image tower runs on ONNX Runtime's CPU provider
    can_use_gpu: bool = False

    @property
    def text_revision(self) -> str:
        """Changes when how the model reads text changes without a new version (a new glossary): the
        query bank's vectors are then recomputed. "" for a model whose text side is fixed by its spec."""
        return ""

    @property
    def full_dim(self) -> int:
        """The width of the model's own vectors (``dim`` unless cut to a Matryoshka prefix)."""
        return self.dim

    def encode_images(self, images: list) -> np.ndarray:
        """(n, dim) vectors of RGB PIL images, prepared as the model's preprocessing does."""
        raise NotImplementedError(f"{type(self).__name__} encodes no images")

    def encode_texts(self, texts: list[str], languages: Languages = None) -> np.ndarray:
        """(n, dim) vectors of query texts; ``languages`` used where ``accepts_languages``."""
        raise NotImplementedError(f"{type(self).__name__} encodes no texts")

    def text_languages(self, texts: list[str], languages: Languages = None) -> list[str | None]:
        """Per text, the language as the model reads it (NLLB: a FLORES-200 token such as deu_Latn);
        None where the model takes no language."""
        return [None] * len(texts)

    def query_readings(self, texts: list[str]) -> list[list[str]]:
        """Per text, how the model read it besides the text itself (babel-lite: the English glosses of
        Chinese characters), shown to users as ``readings``; empty lists where there is nothing to show."""
        return [[] for _ in texts]
