"""Ground truth for ``babelsearch eval``: class truth or caption truth, read into queries per language.

Two kinds, both read from whatever files the caller gives (no evaluation data ships with babelsearch):

* class truth, the Babel-ImageNet protocol: LABELS.json maps a language to
  ``[[class indices], [class names]]``; TRUTH.tsv maps an image path to its class index
  (``path<TAB>class_idx``, or a table with a header naming ``path``/``file`` and ``class_idx``
  columns, like the shared sample's labels.tsv). Every class name in a language is one query; the
  relevant images are those of its class.
* caption truth (XTD10, Crossmodal-3600 style): a TSV with a header naming ``query`` and ``path``
  columns and optionally ``language``; each row gives a query text and one or more relevant image
  paths (the path column and every column after it); rows repeating a query add paths.

Paths are absolute or relative to the TRUTH file's folder.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from babelsearch.engine.errors import BabelsearchError
from babelsearch.engine.layout import expand_home

PATH_COLUMNS = ("path", "file", "image", "filename")
CLASS_COLUMNS = ("class_idx", "class", "label", "class_index")
QUERY_COLUMNS = ("query", "text", "caption")
LANGUAGE_COLUMNS = ("language", "lang")
ENGLISH = frozenset({"en", "eng", "english"})
ALL_LANGUAGES = "all"


class EvaluationError(BabelsearchError):
    """Evaluation input that cannot be used (missing file, unknown language, no matching images)."""


@dataclass
class EvalSet:
    """Queries per language, each with the set of relevant image paths (resolved)."""

    queries: dict[str, list[tuple[str, frozenset[str]]]]
    kind: str  # "class" or "caption"
    truth_images: int = 0


def load_eval_set(
    truth: str | os.PathLike, labels: str | os.PathLike | None = None, languages: Iterable[str] | None = None
) -> EvalSet:
    """Read class truth (with ``labels``) or caption truth (a ``query`` column) into queries."""
    truth = Path(truth)
    rows = _read_tsv(truth)
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    wanted = _normalise_languages(languages)
    if _find(header, QUERY_COLUMNS) is not None:
        return _caption_set(truth, header, rows[1:], wanted)
    if labels is None:
        raise EvaluationError(f"{truth} maps images to classes: give the class names with --labels LABELS.json")
    return _class_set(truth, rows, Path(labels), wanted)


def _read_tsv(path: Path) -> list[list[str]]:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = [
                row for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if any(c.strip() for c in row)
            ]
    except FileNotFoundError:
        raise EvaluationError(f"truth file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"truth file {path} cannot be read as UTF-8 TSV ({exc})") from None
    if not rows:
        raise EvaluationError(f"truth file {path} is empty")
    return rows


def _find(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None


def _normalise_languages(languages: Iterable[str] | None) -> list[str] | None:
    if languages is None:
        return None
    wanted = [lang.strip() for lang in languages if lang.strip()]
    return wanted or None


def _pick_languages(available: list[str], wanted: list[str] | None, where: Path) -> list[str]:
    if wanted is None:
        return sorted(available)
    by_lower = {lang.lower(): lang for lang in available}
    unknown = [lang for lang in wanted if lang.lower() not in by_lower]
    if unknown:
        raise EvaluationError(f"{where} has no language {', '.join(unknown)}; it has {', '.join(sorted(available))}")
    return list(dict.fromkeys(by_lower[lang.lower()] for lang in wanted))


def _resolve(base: Path, path: str) -> str:
    p = expand_home(path.strip())
    return str((p if p.is_absolute() else base / p).resolve())


def _class_set(truth: Path, rows: list[list[str]], labels: Path, wanted: list[str] | None) -> EvalSet:
    header = [cell.strip().lower() for cell in rows[0]]
    path_col, class_col = _find(header, PATH_COLUMNS), _find(header, CLASS_COLUMNS)
    if path_col is not None and class_col is not None:
        body = rows[1:]
    elif len(rows[0]) >= 2 and rows[0][1].strip().lstrip("-").isdigit():
        path_col, class_col, body = 0, 1, rows  # no header: path<TAB>class_idx
    else:
        raise EvaluationError(
            f"{truth}: expected path<TAB>class_idx lines, or a header with a path/file column and a "
            f"class_idx column, or (caption truth) a query column"
        )
    images_of: dict[int, set[str]] = {}
    base = truth.parent
    for number, row in enumerate(body, 2 if body is not rows else 1):
        try:
            images_of.setdefault(int(row[class_col]), set()).add(_resolve(base, row[path_col]))
        except (IndexError, ValueError):
            raise EvaluationError(f"{truth} line {number}: expected a path and an integer class index") from None
    try:
        table = json.loads(labels.read_text("utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"labels file {labels} does not exist") from None
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"labels file {labels} is not readable JSON ({exc})") from None
    if not isinstance(table, dict) or not table:
        raise EvaluationError(f"{labels} must map each language to [[class indices], [class names]]")
    queries: dict[str, list[tuple[str, frozenset[str]]]] = {}
    for language in _pick_languages(list(table), wanted, labels):
        try:
            indices, names = table[language]
            pairs = list(zip([int(i) for i in indices], [str(n) for n in names], strict=True))
        except (TypeError, ValueError):
            raise EvaluationError(f"{labels}: {language} is not [[class indices], [class names]]") from None
        queries[language] = [(name, frozenset(images_of.get(idx, ()))) for idx, name in pairs]
    return EvalSet(queries=queries, kind="class", truth_images=sum(len(v) for v in images_of.values()))


def _caption_set(truth: Path, header: list[str], body: list[list[str]], wanted: list[str] | None) -> EvalSet:
    query_col, path_col = _find(header, QUERY_COLUMNS), _find(header, PATH_COLUMNS + ("paths", "images"))
    lang_col = _find(header, LANGUAGE_COLUMNS)
    if path_col is None:
        raise EvaluationError(f"{truth}: caption truth needs a path column next to its query column")
    assert query_col is not None  # load_eval_set only comes here when the header has one
    relevant: dict[str, dict[str, set[str]]] = {}
    for number, row in enumerate(body, 2):
        language = row[lang_col].strip() if lang_col is not None and lang_col < len(row) else ALL_LANGUAGES
        query = row[query_col].strip() if query_col < len(row) else ""
        paths = [cell for cell in row[path_col:] if cell.strip()]
        if not query or not paths:
            raise EvaluationError(f"{truth} line {number}: expected a query and at least one image path")
        relevant.setdefault(language, {}).setdefault(query, set()).update(_resolve(truth.parent, p) for p in paths)
    queries = {
        language: [(q, frozenset(p)) for q, p in relevant[language].items()]
        for language in _pick_languages(list(relevant), wanted, truth)
    }
    images = {p for by_query in relevant.values() for paths in by_query.values() for p in paths}
    return EvalSet(queries=queries, kind="caption", truth_images=len(images))
