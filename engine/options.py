"""What one search may ask for: SearchOptions, checked once where it is made, and the query limits."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TypedDict

import numpy as np

from . import rerank as rr
from .errors import InvalidQuery
from .filters import Where, digits_number

MAX_QUERY_CHARS = 1000
MAX_K = 1000
MAX_REFINE_FACTOR = 100
# more inverted lists than an index has means all of them; an index of a billion images has 2**17
MAX_NPROBE = 2**20
MIN_SCORE_LIMIT = 100  # min_score from -100 to 100 (scores are cosines or reranked cosines)

__all__ = [
    "MAX_K",
    "MAX_NPROBE",
    "MAX_QUERY_CHARS",
    "MAX_REFINE_FACTOR",
    "MIN_SCORE_LIMIT",
    "ImageKeywords",
    "SearchKeywords",
    "SearchOptions",
    "check_text",
    "from_call",
]


@dataclass(frozen=True)
class SearchOptions:
    """The parameters of one search; None takes the index's default (its manifest).

    ``k``: hits wanted (1 to MAX_K). ``rerank``: "margin", "distance", "csls" or "none".
    ``margin_k``: the reranking neighbourhood (1-16, 32, 64, 128, 256 or "all"). ``nprobe``: inverted
    lists scanned (IVF indexes). ``refine_factor``: k * refine_factor candidates are re-scored exactly
    (1 to MAX_REFINE_FACTOR). ``lang``: the query's language (ISO 639 such as "de" or "pt-BR"; None:
    detected), given to models that read it (NLLB's language token); others ignore it. ``where``: a
    filters.Where (folder, date taken, size, orientation, type); only the images it allows are
    searched. ``min_score``: hits scoring below it (the final score, after reranking) are left out.
    ``collapse``: near-duplicates of a better hit are folded into it (``Hit.similar``) instead of
    taking their own places. A bad value raises InvalidQuery here, so an object that exists is valid.
    """

    k: int = 10
    rerank: str | None = None
    margin_k: int | str | None = None
    nprobe: int | None = None
    refine_factor: int | None = None
    lang: str | None = None
    where: Where | None = None
    min_score: float | None = None
    collapse: bool = False

    def __post_init__(self) -> None:
        # frozen: the checked values (numpy integers made plain ints) are set through object.__setattr__
        set_ = object.__setattr__
        if not _is_int(self.k) or not 1 <= self.k <= MAX_K:
            raise InvalidQuery(f"k must be an integer from 1 to {MAX_K}, got {self.k!r}")
        set_(self, "k", int(self.k))
        if self.rerank is not None and self.rerank not in rr.RERANK_MODES:
            raise InvalidQuery(f"rerank must be one of {', '.join(rr.RERANK_MODES)}, got {self.rerank!r}")
        if self.margin_k is not None:
            try:
                rr.check_margin_k(self.margin_k)
            except ValueError:
                raise InvalidQuery(
                    f"margin_k must be 1 to 16, 32, 64, 128, 256 or 'all', got {self.margin_k!r}"
                ) from None
            set_(self, "margin_k", self.margin_k if isinstance(self.margin_k, str) else int(self.margin_k))
        if self.nprobe is not None:
            set_(self, "nprobe", _positive("nprobe", self.nprobe, MAX_NPROBE))
        if self.refine_factor is not None:
            set_(self, "refine_factor", _positive("refine_factor", self.refine_factor, MAX_REFINE_FACTOR))
        if self.lang is not None:
            from .language import given_language

            if not isinstance(self.lang, str):
                raise InvalidQuery(f"lang must be a language code such as 'de' or 'pt-BR', got {self.lang!r}")
            set_(self, "lang", given_language(self.lang).code)
        if self.where is not None:
            if not isinstance(self.where, Where):
                raise InvalidQuery(f"where must be a Where (babelsearch.Where), got {type(self.where).__name__}")
            if self.where.is_empty:
                set_(self, "where", None)
        if self.min_score is not None:
            if isinstance(self.min_score, bool) or not isinstance(self.min_score, (int, float, np.number)):
                raise InvalidQuery(f"min_score must be a number, got {self.min_score!r}")
            if not math.isfinite(self.min_score) or abs(self.min_score) > MIN_SCORE_LIMIT:
                raise InvalidQuery(
                    f"min_score must be a number from -{MIN_SCORE_LIMIT} to {MIN_SCORE_LIMIT}, got {self.min_score!r}"
                )
            set_(self, "min_score", float(self.min_score))
        if not isinstance(self.collapse, (bool, np.bool_)):
            raise InvalidQuery(f"collapse must be true or false, got {self.collapse!r}")
        set_(self, "collapse", bool(self.collapse))

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None = None, **more: Any) -> SearchOptions:
        """Options from loose values, such as a web request's arguments or a form: only the option
        names are read (others, like q or offset, are left alone), None and "" mean "not given", and
        whole numbers written as text are read as numbers. ``more`` overrides ``values``."""
        unknown = set(more) - set(_NAMES)
        if unknown:
            raise TypeError(f"unknown search options: {', '.join(sorted(unknown))}")
        merged = {**(values or {}), **more}
        given: dict[str, Any] = {}
        # the filters come under their own names (folder, after, ...), read from the values as they came
        # (folder, exclude and type may repeat); ``where=`` given as a keyword replaces them
        where = more["where"] if "where" in more else Where.from_values(values)
        if where is not None:
            given["where"] = where
        for name in _LOOSE_NAMES:
            value = merged.get(name)
            if name == "min_score" and isinstance(value, str) and value.strip():
                given[name] = _number_text("min_score", value)
                continue
            if name == "collapse" and isinstance(value, str):
                if value.strip():
                    given[name] = bool_text("collapse", value)
                continue
            if isinstance(value, str):
                value = value.strip()
                # "all" (margin_k) and mode names stay text; digits become the number they spell
                value = digits_number(name, value) if value.isascii() and value.isdigit() else value
            if value is not None and value != "":
                given[name] = value
        return cls(**given)


_NAMES = tuple(field.name for field in fields(SearchOptions))
_LOOSE_NAMES = tuple(name for name in _NAMES if name != "where")
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("0", "false", "off", "no")


def bool_text(name: str, text: str) -> bool:
    """A yes/no request value: 1/true/on/yes or 0/false/off/no (any case), else InvalidQuery."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidQuery(f"{name} must be true or false, got {text[:40]!r}")


def _number_text(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise InvalidQuery(f"{name} must be a number such as 0.05, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise InvalidQuery(f"{name} must be a finite number, got {text[:40]!r}")
    return value


class SearchKeywords(TypedDict, total=False):
    """What a text or vector search takes as keywords besides k (one list, so that the engine's
    signatures do not each repeat it); the meaning is SearchOptions'."""

    rerank: str | None
    margin_k: int | str | None
    nprobe: int | None
    refine_factor: int | None
    lang: str | None
    where: Where | None
    min_score: float | None
    collapse: bool


class ImageKeywords(TypedDict, total=False):
    """What an image query takes besides k: it ranks by plain cosine, so no rerank or margin_k."""

    nprobe: int | None
    refine_factor: int | None
    where: Where | None
    min_score: float | None
    collapse: bool


TEXT_KEYWORDS = tuple(SearchKeywords.__annotations__)
IMAGE_KEYWORDS = tuple(ImageKeywords.__annotations__)


def from_call(
    options: SearchOptions | None, k: int | None, keywords: Mapping[str, Any], allowed: tuple[str, ...] = TEXT_KEYWORDS
) -> SearchOptions:
    """The options of one engine call, which takes ``options=`` or k and the ``allowed`` keywords."""
    unknown = sorted(set(keywords) - set(allowed))
    if unknown:
        raise TypeError(f"unexpected search option {unknown[0]!r} (this call takes k, {', '.join(allowed)})")
    given = {name: value for name, value in {"k": k, **keywords}.items() if value is not None}
    if options is None:
        return SearchOptions(**given)
    if not isinstance(options, SearchOptions):
        raise TypeError(f"options must be a SearchOptions, got {type(options).__name__}")
    if given:
        # merging would make a second object to check; one source of truth per call is clearer
        raise TypeError(f"pass options= or {', '.join(given)} as keywords, not both")
    return options


def check_text(text: Any) -> str:
    """A text query as given, or InvalidQuery saying why it cannot be searched."""
    if not isinstance(text, str):
        raise InvalidQuery(f"a query must be text, got {type(text).__name__}")
    if not text.strip():
        raise InvalidQuery("the query is empty")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"the query is too long ({len(text)} characters; at most {MAX_QUERY_CHARS})")
    if _LONE_SURROGATE.search(text):
        # a command-line argument of bytes that are not UTF-8 arrives so; no model can read it
        raise InvalidQuery("the query is not valid text: it holds bytes that are not UTF-8")
    return text


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _positive(name: str, value: Any, most: int | None = None) -> int:
    if not _is_int(value) or value < 1 or (most is not None and value > most):
        limit = f" from 1 to {most}" if most else " of at least 1"
        raise InvalidQuery(f"{name} must be an integer{limit}, got {value!r}")
    return int(value)
