"""sentence-transformers models: ``st:NAME`` and ``local:DIR`` sentence-transformers folders.

``st:clip-ViT-B-32-multilingual-v1`` is a multilingual student distilled against CLIP's English text
tower, so it encodes texts only; images go through the teacher, ``clip-ViT-B-32``. ``PAIRS`` holds
such pairings; ``st:TEXT+IMAGE`` names any other pair, and ``st:NAME`` alone is one model that
encodes both (a CLIP model). Bare names are in the ``sentence-transformers`` organisation.

``local:DIR`` is a sentence-transformers CLIP folder, or a folder with ``text/`` and ``image/`` ones
(``engine.encoders.local``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnknownModel
from . import normalize_rows
from .base import Encoder, Languages
from .local import (
    LocalModel,
    autocast_for,
    batch_size_for,
    fingerprint,
    hub_unreachable_reason,
    is_missing_error,
    models_cache_dir,
    raise_unavailable,
    resolve_device,
    weight_files,
)

__all__ = ["PAIRS", "SentenceTransformersEncoder", "load_sentence_transformers", "load_local_sentence_transformers"]

PREFIX = "st:"
ORGANISATION = "sentence-transformers"
# multilingual students -> the CLIP model whose image tower shares their space
PAIRS = {
    "sentence-transformers/clip-ViT-B-32-multilingual-v1": "sentence-transformers/clip-ViT-B-32",
}


def _sentence_transformer_class():
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UnknownModel(
            "st: and local: sentence-transformers models need sentence-transformers: pip install 'babelsearch[clip]'"
        ) from None
    return SentenceTransformer


def _dimension(model: Any) -> int:
    method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(method())


def _modalities(model: Any) -> set[str]:
    return set(getattr(model, "modalities", None) or ["text"])


class SentenceTransformersEncoder(Encoder):
    """A sentence-transformers text model and image model sharing one space (rows L2-normalised)."""

    backend = "sentence-transformers"
    # encode_texts takes languages= (the engine passes the query language; NLLB reads it as a token)
    accepts_languages = True
    can_use_gpu = True

    def __init__(self, spec: str, text_model: Any, image_model: Any, version: str, device: str) -> None:
        if "image" not in _modalities(image_model):
            raise UnknownModel(f"{spec}: the image model encodes {sorted(_modalities(image_model))} only, not images")
        dim, image_dim = _dimension(text_model), _dimension(image_model)
        if dim != image_dim:
            raise UnknownModel(f"{spec}: the text model makes {dim}-d vectors, the image model {image_dim}-d")
        self.name = spec
        self.dim = dim
        self.version = version
        self.device = device
        self.text_model = text_model
        self.image_model = image_model
        self.image_batch_size = batch_size_for(device, "image")
        self.text_batch_size = batch_size_for(device, "text")
        self.preprocess_short_side = _short_side(image_model)

    def _autocast(self):
        return autocast_for(self.device)

    def encode_images(self, images: list) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        rgb = [img if img.mode == "RGB" else img.convert("RGB") for img in images]
        with self._autocast():
            vectors = self.image_model.encode(
                rgb, batch_size=self.image_batch_size, convert_to_numpy=True, show_progress_bar=False
            )
        return normalize_rows(np.asarray(vectors, dtype=np.float32).reshape(len(images), self.dim))

    def encode_texts(self, texts: list[str], languages: Languages = None) -> np.ndarray:
        # ``languages`` is accepted for the contract's sake: these text towers take no language hint
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._autocast():
            vectors = self.text_model.encode(
                list(texts), batch_size=self.text_batch_size, convert_to_numpy=True, show_progress_bar=False
            )
        return normalize_rows(np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim))


def _short_side(model: Any) -> int | None:
    """The image processor's resize target, so the indexer's decoders can reduce images to it."""
    try:
        size = model[0].processor.image_processor.size
        side = size.get("shortest_edge") if hasattr(size, "get") else getattr(size, "shortest_edge", None)
        return int(side) if side else None
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _repo(name: str) -> str:
    name = name.strip()
    return name if "/" in name else f"{ORGANISATION}/{name}"


def _hub_model(spec: str, repo: str, device: str) -> tuple[Any, Path]:
    """A hub model from the cache, else downloaded; with its snapshot folder (for the fingerprint)."""
    cls = _sentence_transformer_class()
    cache = models_cache_dir()
    try:
        model = cls(repo, device=device, cache_folder=cache, local_files_only=True)
    except Exception as exc:
        if not is_missing_error(exc):
            raise
        why = hub_unreachable_reason()
        if why:
            raise_unavailable(spec, f"{repo} is not in the model cache and {why}", exc)
        try:
            model = cls(repo, device=device, cache_folder=cache)
        except Exception as again:
            if not is_missing_error(again):
                raise
            raise_unavailable(spec, f"{repo} cannot be downloaded ({again})", again)
            raise AssertionError("unreachable") from None
    from huggingface_hub import snapshot_download

    return model, Path(snapshot_download(repo, cache_dir=cache, local_files_only=True))


def _version(folders: list[Path]) -> str:
    files = [path for folder in dict.fromkeys(folders) for path in weight_files(folder)]
    if not files:
        raise UnknownModel(f"no weights files in {', '.join(str(f) for f in folders)}")
    return fingerprint(files)


def load_sentence_transformers(spec: str) -> SentenceTransformersEncoder:
    """``st:NAME`` (paired per PAIRS, or one CLIP model) or ``st:TEXT+IMAGE``."""
    body = spec[len(PREFIX) :].strip()
    text_name, _, image_name = body.partition("+")
    if not text_name.strip():
        raise UnknownModel(f"{spec!r}: expected st:NAME or st:TEXT+IMAGE, e.g. st:clip-ViT-B-32-multilingual-v1")
    text_repo = _repo(text_name)
    image_repo = _repo(image_name) if image_name.strip() else PAIRS.get(text_repo, text_repo)
    device = resolve_device()
    text_model, text_folder = _hub_model(spec, text_repo, device)
    if image_repo == text_repo:
        image_model, image_folder = text_model, text_folder
    else:
        image_model, image_folder = _hub_model(spec, image_repo, device)
    return SentenceTransformersEncoder(spec, text_model, image_model, _version([text_folder, image_folder]), device)


def load_local_sentence_transformers(spec: str, found: LocalModel) -> SentenceTransformersEncoder:
    """``local:DIR``: one sentence-transformers CLIP folder, or ``text/`` + ``image/`` folders."""
    cls = _sentence_transformer_class()
    device = resolve_device()
    if found.kind == "sentence-transformers-pair":
        assert found.text is not None and found.image is not None
        text_model = cls(str(found.text), device=device, local_files_only=True)
        image_model = cls(str(found.image), device=device, local_files_only=True)
        folders = [found.text, found.image]
    else:
        text_model = image_model = cls(str(found.path), device=device, local_files_only=True)
        folders = [found.path]
        if "text" not in _modalities(text_model):
            raise UnknownModel(f"{found.path}: this sentence-transformers model does not encode text")
    return SentenceTransformersEncoder(spec, text_model, image_model, _version(folders), device)
