"""The one Encoder contract (base.py) and the one registry of model specs.

Indexer and engine know nothing else about models: they ask ``get_encoder(spec)`` for an ``Encoder``
(``name``, ``dim``, ``encode_images``, ``encode_texts`` and the members base.py declares with their
defaults), whose outputs are L2-normalised float32. A spec is a string such as ``babel-lite``; a backend
registers a prefix (``st:``, ``openclip:``) or an exact name together with a factory that returns an
instance of an Encoder subclass.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ..errors import InvalidSetting, UnknownModel
from .base import Encoder, Languages

__all__ = [
    "Encoder",
    "Languages",
    "DEFAULT_MODEL",
    "get_encoder",
    "register_encoder",
    "available_models",
    "normalize_rows",
]

DEFAULT_MODEL = "babel-lite"


EncoderFactory = Callable[[str], Encoder]

# exact names and prefixes ("st:", "openclip:") -> factory(spec)
_exact: dict[str, EncoderFactory] = {}
_prefixes: dict[str, EncoderFactory] = {}


def register_encoder(name_or_prefix: str, factory: EncoderFactory) -> None:
    """Register a factory for an exact spec name, or for every spec starting with a prefix ending ':'."""
    table = _prefixes if name_or_prefix.endswith(":") else _exact
    table[name_or_prefix] = factory
    get_encoder.cache_clear()


def available_models() -> list[str]:
    """Names and prefixes the registry resolves, for help texts and error messages."""
    return sorted(_exact) + sorted(p + "..." for p in _prefixes)


@functools.cache
def get_encoder(spec: str = DEFAULT_MODEL) -> Encoder:
    """Resolve a model spec to a loaded encoder (cached: one model per spec per process)."""
    spec = spec.strip()
    factory = _exact.get(spec) or next((f for prefix, f in _prefixes.items() if spec.startswith(prefix)), None)
    if factory is None:
        raise UnknownModel(f"unknown model {spec!r}; available: {', '.join(available_models())}")
    encoder = factory(spec)
    if not isinstance(encoder, Encoder):
        # what the engine and indexer may use of it is what Encoder declares, defaults included
        raise InvalidSetting(
            f"the model registered for {spec!r} is a {type(encoder).__name__}, which does not subclass "
            "babelsearch.Encoder; subclass it (engine/encoders/base.py says what each member means)"
        )
    return encoder


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows as float32; all-zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _babel_lite(spec: str) -> Encoder:
    from .babel_lite import BabelLiteEncoder

    return BabelLiteEncoder()


register_encoder("babel-lite", _babel_lite)


# CLIP backends (open_clip_torch, sentence-transformers: the "clip" extra), imported on first use
def _openclip(spec: str) -> Encoder:
    from .openclip import load_openclip

    return load_openclip(spec)


def _sentence_transformers(spec: str) -> Encoder:
    from .sentence_transformers import load_sentence_transformers

    return load_sentence_transformers(spec)


def _local(spec: str) -> Encoder:
    from .local import resolve_local

    found = resolve_local(spec)
    if found.kind == "openclip":
        from .openclip import load_local_openclip

        return load_local_openclip(spec, found)
    from .sentence_transformers import load_local_sentence_transformers

    return load_local_sentence_transformers(spec, found)


register_encoder("openclip:", _openclip)
register_encoder("st:", _sentence_transformers)
register_encoder("local:", _local)
